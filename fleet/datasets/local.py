"""Data sets in a data root: where each lives, whether it is there, whether its bytes are right.

The data root (``fleet.paths.data_root``: ``$FLEET_DATA``, else ``../shared/data`` beside the
checkout, else the user cache) holds each data set in the folder its catalog entry names
(``speech/``, ``rag/cranfield/`` …). Nothing here writes to it; ``fleet.datasets.fetch`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fleet.datasets.catalog import DataSet, FileEntry, get_dataset
from fleet.errors import FleetError
from fleet.models.manifest import sha256_file


def resolve_root(root: Path | None = None) -> Path:
    """``root``, or the data root from the environment (``fleet.paths.data_root``)."""
    from fleet.paths import data_root

    return Path(root).resolve() if root is not None else data_root()


def dataset_dir(ds: DataSet, root: Path | None = None) -> Path:
    """The data set's folder in the data root (may not exist)."""
    return resolve_root(root) / ds.path


@dataclass
class FileCheck:
    """One file against its catalog entry.

    Attributes:
        path: relative to the data set's folder.
        status: ``ok``, ``missing``, ``size`` (size differs) or ``sha256`` (bytes differ).
        expected: the catalog's sha256 (``size``: its byte count).
        found: the file's sha256 (``size``: its byte count; ``missing``: empty).
    """

    path: str
    status: str
    expected: str = ""
    found: str = ""


@dataclass
class Verification:
    """A data set in a data root, checked file by file against the catalog.

    Attributes:
        name: data set name.
        folder: its folder in the data root.
        files: one check per catalog file (of the selection checked).
        extra: files in the folder the catalog does not list (reported, never an error).
        hashed: True when sha256 was computed, False when only presence and size were checked.
    """

    name: str
    folder: Path
    files: list[FileCheck] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    hashed: bool = True

    @property
    def ok(self) -> bool:
        """Every catalog file present with the recorded size (and sha256 when hashed)."""
        return all(c.status == "ok" for c in self.files)

    @property
    def problems(self) -> list[FileCheck]:
        """The files that are not ``ok``."""
        return [c for c in self.files if c.status != "ok"]

    def summary(self) -> str:
        """One line: ``ok (24 files)``, ``missing`` or the count of bad files with the first few."""
        if self.ok:
            return f"ok ({len(self.files)} files{', sha256 checked' if self.hashed else ''})"
        bad = self.problems
        if all(c.status == "missing" for c in self.files):
            return f"missing ({self.folder} does not hold it)" if self.folder.is_dir() else f"missing ({self.folder})"
        first = "; ".join(_describe(c) for c in bad[:3])
        return f"{len(bad)} of {len(self.files)} files wrong: {first}{' …' if len(bad) > 3 else ''}"

    def to_dict(self) -> dict:
        """JSON view (``fleet datasets verify --json``)."""
        return {"name": self.name, "folder": str(self.folder), "ok": self.ok, "hashed": self.hashed,
                "files": [vars(c) for c in self.files], "extra": list(self.extra)}


def _describe(c: FileCheck) -> str:
    if c.status == "missing":
        return f"{c.path} missing"
    if c.status == "size":
        return f"{c.path} is {c.found} bytes, catalog says {c.expected}"
    return f"{c.path} sha256 {c.found[:12]}…, catalog says {c.expected[:12]}…"


def check_file(folder: Path, entry: FileEntry, hashed: bool = True) -> FileCheck:
    """``entry`` against ``folder / entry.path``: presence, size, then (``hashed``) sha256."""
    p = folder / entry.path
    if not p.is_file():
        return FileCheck(entry.path, "missing", entry.sha256)
    size = p.stat().st_size
    if size != entry.bytes:
        return FileCheck(entry.path, "size", str(entry.bytes), str(size))
    if hashed:
        sha = sha256_file(p)
        if sha != entry.sha256:
            return FileCheck(entry.path, "sha256", entry.sha256, sha)
    return FileCheck(entry.path, "ok", entry.sha256, entry.sha256 if hashed else "")


def verify(name: str, root: Path | None = None, *, hashed: bool = True, selection: str | None = None,
           folder: Path | None = None) -> Verification:
    """Check a data set in the data root against its catalog entry.

    Args:
        name: data set name.
        root: data root (default ``fleet.paths.data_root()``).
        hashed: compute sha256 (about 30 ms per 10 MB); False checks presence and size only.
        selection: check only that selection's files (``DataSet.selected``).
        folder: check this folder instead of the data set's folder in ``root`` (a download).

    Raises:
        FleetError: unknown data set or selection.
    """
    ds = get_dataset(name)
    folder = Path(folder) if folder is not None else dataset_dir(ds, root)
    entries = ds.selected(selection)
    v = Verification(name=name, folder=folder, hashed=hashed,
                     files=[check_file(folder, e, hashed) for e in entries])
    if folder.is_dir():
        listed = {e.path for e in ds.files}
        v.extra = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                         if p.is_file() and str(p.relative_to(folder)) not in listed)
    return v


def require(name: str, root: Path | None = None, *, hashed: bool = False, selection: str | None = None) -> Path:
    """The folder of a data set that is present in the data root (every catalog file there with
    its recorded size; with ``hashed``, its sha256 too).

    Raises:
        FleetError: unknown data set, or the data set is missing or incomplete in the data root —
            the message names the data root and the files, the fix says ``fleet datasets fetch
            NAME`` or ``FLEET_DATA``.
    """
    v = verify(name, root, hashed=hashed, selection=selection)
    if not v.ok:
        where = resolve_root(root)
        raise FleetError(f"data set '{name}' in the data root {where}: {v.summary()}",
                         f"run `fleet datasets fetch {name}`, or set FLEET_DATA to a data root that holds "
                         f"it (docs/contracts.md §5)")
    return v.folder
