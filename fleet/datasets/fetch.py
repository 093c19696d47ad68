"""``fleet datasets fetch``: put a data set into the data root from its public origin.

Only the files that are missing or wrong are fetched. Everything is first written to a temporary
folder inside the data root, checked against the catalog's sha256, and only then moved into the
data set's folder (one ``os.replace`` per file), so a failed download, a wrong byte or an interrupt
leaves the data root as it was: no partial file, no temporary folder, no new empty folder.

Where a file comes from (its catalog entry): its own public URLs, tried in order; the data set's
``sources`` archives (each checked by sha256) run through its converter
(``fleet.datasets.convert``); or, for a file the project wrote, the copy in the repository. A
``mirror`` (a lab's copy of a data root served over http(s) or ``file://``) replaces the public
URLs and the conversion: every file is read from ``MIRROR/<data set path>/<file path>``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fleet.datasets.catalog import DataSet, FileEntry, get_dataset, load_catalog
from fleet.datasets.convert import CONVERTERS
from fleet.datasets.local import check_file, dataset_dir, resolve_root, verify
from fleet.errors import EXIT_INFRA, FleetError

TIMEOUT_S = 60.0          # per connection attempt and per read (urllib's socket timeout)
USER_AGENT = "fleet-datasets"
_CHUNK = 1 << 16


@dataclass
class FetchResult:
    """What one fetch did.

    Attributes:
        name: data set name.
        folder: the data set's folder in the data root.
        status: ``present`` (already verified, nothing fetched) or ``fetched``.
        fetched: files written, relative to ``folder``.
        downloaded_bytes: bytes read over the network (or from the mirror).
        seconds: wall time.
    """

    name: str
    folder: Path
    status: str
    fetched: list[str] = field(default_factory=list)
    downloaded_bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON view (``fleet datasets fetch --json``)."""
        return {"name": self.name, "folder": str(self.folder), "status": self.status, "fetched": self.fetched,
                "downloaded_bytes": self.downloaded_bytes, "seconds": round(self.seconds, 3)}


def download(url: str, dest: Path, entry: FileEntry, timeout_s: float = TIMEOUT_S) -> int:
    """Stream ``url`` into ``dest``, checking size and sha256 against ``entry``.

    Returns:
        bytes read.

    Raises:
        FleetError (exit 3): the URL cannot be read, or its bytes are not the catalog's (reading
            stops as soon as it passes the recorded size); ``dest`` is removed.
    """
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    h, n = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r, open(dest, "wb") as f:
            while block := r.read(_CHUNK):
                n += len(block)
                if n > entry.bytes:
                    break
                h.update(block)
                f.write(block)
    except (urllib.error.URLError, OSError, ValueError) as e:
        dest.unlink(missing_ok=True)
        reason = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError)
                  else getattr(e, "reason", None) or e)
        raise FleetError(f"{entry.path}: cannot download {url}: {reason}",
                         "check the network, or fetch from a lab mirror: fleet datasets fetch --mirror URL",
                         exit_code=EXIT_INFRA) from None
    if n != entry.bytes or h.hexdigest() != entry.sha256:
        dest.unlink(missing_ok=True)
        got = f"more than {entry.bytes} bytes" if n > entry.bytes else f"{n} bytes, sha256 {h.hexdigest()}"
        raise FleetError(f"{entry.path}: {url} gave {got}; the catalog records {entry.bytes} bytes, "
                         f"sha256 {entry.sha256}",
                         "the origin changed or the download was cut: nothing was written; try again, "
                         "or fetch from a lab mirror (--mirror URL)", exit_code=EXIT_INFRA)
    return n


def _first_good(urls: list[str], dest: Path, entry: FileEntry, timeout_s: float) -> int:
    """Download from the first URL that gives the catalog's bytes; every failure in the error."""
    errors = []
    for url in urls:
        try:
            return download(url, dest, entry, timeout_s)
        except FleetError as e:
            errors.append(e.message)
    raise FleetError("; ".join(errors) if errors else f"{entry.path}: no URL to download it from",
                     "check the network, or fetch from a lab mirror: fleet datasets fetch --mirror URL",
                     exit_code=EXIT_INFRA)


def mirror_url(mirror: str, ds: DataSet, entry: FileEntry) -> str:
    """``MIRROR/<data set path>/<file path>`` (each path segment URL-quoted)."""
    rel = urllib.parse.quote(f"{ds.path}/{entry.path}")
    return f"{mirror.rstrip('/')}/{rel}"


def _stage(ds: DataSet, needed: list[FileEntry], tmp: Path, mirror: str | None, timeout_s: float) -> int:
    """Write the ``needed`` files into ``tmp`` (same relative paths); returns bytes downloaded."""
    n = 0
    convert = []
    for e in needed:
        dest = tmp / e.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if e.packaged:
            shutil.copyfile(ds.packaged_file(e), dest)
        elif mirror:
            n += _first_good([mirror_url(mirror, ds, e)], dest, e, timeout_s)
        elif e.urls:
            n += _first_good(list(e.urls), dest, e, timeout_s)
        else:
            convert.append(e)
    if convert:
        src_dir = tmp / ".sources"
        src_dir.mkdir()
        sources = {}
        for s in ds.sources:
            sources[s.path] = src_dir / Path(s.path).name
            n += _first_good(list(s.urls), sources[s.path], s, timeout_s)
        out = tmp / ".converted"
        out.mkdir()
        CONVERTERS[ds.convert](sources, out)
        for e in convert:
            (tmp / e.path).parent.mkdir(parents=True, exist_ok=True)
            (out / e.path).replace(tmp / e.path)
    return n


def _new_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    for p in (path, *path.parents):
        if p.exists():
            break
        out.append(p)
    return out


def fetch(name: str, root: Path | None = None, *, mirror: str | None = None,
          timeout_s: float = TIMEOUT_S) -> FetchResult:
    """Make data set ``name`` complete and verified in the data root.

    Args:
        name: data set name (``fleet datasets list``).
        root: data root (default ``fleet.paths.data_root()``).
        mirror: base URL of a lab mirror of a data root (``http://…``, ``file:///…``), used instead
            of the public origins.
        timeout_s: socket timeout per connection and read (s).

    Returns:
        FetchResult (``present`` when the data set already verified).

    Raises:
        FleetError: unknown data set (exit 2); a download that fails or whose bytes differ from
            the catalog (exit 3). The data root is left as it was.
    """
    t0 = time.monotonic()
    ds = get_dataset(name)
    root = resolve_root(root)
    folder = dataset_dir(ds, root)
    state = verify(name, root)
    if state.ok:
        return FetchResult(name, folder, "present", seconds=time.monotonic() - t0)
    needed = [e for e in ds.files if e.path in {c.path for c in state.problems}]
    created = _new_dirs(folder)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=root))
    try:
        n = _stage(ds, needed, tmp, mirror, timeout_s)
        bad = [c for c in (check_file(tmp, e) for e in needed) if c.status != "ok"]
        if bad:  # the converter's output (or a packaged copy) differs from the catalog
            raise FleetError(f"data set '{name}': {', '.join(c.path for c in bad)} made here differ from the catalog "
                             f"(sha256 {bad[0].found or 'missing'} for {bad[0].path}, catalog {bad[0].expected})",
                             "nothing was written; report it with the fleet version (fleet --version)",
                             exit_code=EXIT_INFRA)
        for e in needed:
            dest = folder / e.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp / e.path), str(dest))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:  # deepest first; only folders this call made and left empty
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return FetchResult(name, folder, "fetched", [e.path for e in needed], n, time.monotonic() - t0)


def fetch_names(names: list[str] | None = None) -> list[str]:
    """The data sets to fetch: ``names`` (each checked), or every data set of the catalog."""
    if not names:
        return sorted(load_catalog())
    for n in names:
        get_dataset(n)
    return list(dict.fromkeys(names))
