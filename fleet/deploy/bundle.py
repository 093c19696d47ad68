"""Trees shipped to boards as one tar each: the wheelhouse, each model's artifacts, suite data.

Ansible copies a folder with several SSH round trips per file; a tar costs a few in all. Each
bundle has a content key; the board keeps a marker ``.bundles/<name>.unpacked-<key>`` and the
roles ship and unpack a bundle only when that marker is missing, so an unchanged fleet costs one
`stat` per bundle. Tars are deterministic (sorted names, zero mtimes and owners) and cached in
``.fleet/bundles/`` on the controller.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

Member = tuple[str, "Path | bytes"]  # (name inside the tar, file on the controller or content)


@dataclass(frozen=True)
class Bundle:
    """A tree packed for the boards.

    Attributes:
        name: bundle name (``wheelhouse``, ``model-whisper-tiny.en``, ``data-speech``).
        src: the tar on the controller.
        key: 16 hex digits identifying the content (names the unpack marker on the board).
    """

    name: str
    src: Path
    key: str

    def to_vars(self, dest: str) -> dict:
        """The role's view: {name, src, key, dest} with ``dest`` relative to fleet_root."""
        return {"name": self.name, "src": str(self.src), "key": self.key, "dest": dest}


def folder_members(folder: Path) -> list[Member]:
    """Every file under ``folder`` (no __pycache__), sorted, as tar members."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(folder).parts)
    return [(str(p.relative_to(folder)), p) for p in files]


def content_key(members: list[Member]) -> str:
    """sha256 (16 hex digits) over member names and contents."""
    h = hashlib.sha256()
    for name, src in members:
        h.update(name.encode() + b"\0")
        if isinstance(src, bytes):
            h.update(src)
        else:
            with open(src, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


KEEP_BUNDLES = 3  # bundles kept per name (model, dataset, wheelhouse)


def pack(members: list[Member], cache: Path, name: str, key: str | None = None) -> Bundle:
    """Write ``cache/<name>-<key>.tar`` unless it exists; keep the newest KEEP_BUNDLES of ``name``.

    Args:
        members: (name in tar, source path or bytes), in the order to store.
        key: content key when the caller already knows it (e.g. from verified sha256s);
            computed from the members otherwise.
    """
    key = key or content_key(members)
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / f"{name}-{key}.tar"
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.exists():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tar", dir=cache)
            os.close(fd)
            try:
                with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
                    for arcname, src in members:
                        info = tarfile.TarInfo(arcname)
                        info.mode = 0o644
                        if isinstance(src, bytes):
                            info.size = len(src)
                            tar.addfile(info, io.BytesIO(src))
                        else:
                            info.size = Path(src).stat().st_size
                            with open(src, "rb") as f:
                                tar.addfile(info, f)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        # Keep the newest few bundles of this name, not just this one: another deploy (another
        # artifacts folder, a test) may be copying an older bundle right now.
        dest.touch()
        olds = sorted((p for p in cache.glob(f"{name}-*.tar") if p != dest and len(p.name) == len(dest.name)),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in olds[KEEP_BUNDLES - 1:]:
            old.unlink(missing_ok=True)
    return Bundle(name, dest, key)
