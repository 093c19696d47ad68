"""The data-set catalog: what the project wrote about each data set (docs/contracts.md §5).

One YAML file per data set in ``fleet/datasets/catalog/<name>.yml``: its name, the folder it lives
in under the data root, every file with sha256 and size, and where each file comes from — a public
URL of the file itself (``urls``), a public archive the data set's converter turns into the file
(``sources`` + ``convert``), or a file the project wrote, kept in ``catalog/<name>/``
(``packaged``). The data itself is never in the repository.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from fleet.errors import FleetError

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"
KEYS = {"name", "path", "description", "license", "origin", "deploy", "selections", "sources", "convert", "files"}
FILE_KEYS = {"path", "sha256", "bytes", "urls", "packaged"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    """One file of a data set (or one download of its ``sources``).

    Attributes:
        path: relative to the data set's folder (POSIX, no ``..``).
        sha256: 64 lower-case hex digits of the file's bytes.
        bytes: the file's size in bytes.
        urls: public URLs of the file itself, tried in order; empty when it is converted or packaged.
        packaged: the project wrote this file; it ships in ``catalog/<data set>/<path>``.
    """

    path: str
    sha256: str
    bytes: int
    urls: tuple[str, ...] = ()
    packaged: bool = False


@dataclass(frozen=True)
class DataSet:
    """One catalog entry (``catalog/<name>.yml``).

    Attributes:
        name: the name suites, deploy and ``fleet datasets`` use (``speech``, ``cranfield``).
        path: its folder under the data root (``speech``, ``rag/cranfield``).
        description, license, origin: one line each, for people (``fleet datasets list``).
        deploy: shipped to boards by ``fleet deploy`` unless ``--datasets`` says otherwise.
        files: every file of the data set.
        sources: archives downloaded for ``convert`` (each pinned by sha256); empty for most.
        convert: name of the converter (``fleet.datasets.convert.CONVERTERS``) that makes the
            files without ``urls``/``packaged`` from ``sources``.
        selections: named subsets {name: file paths} (e.g. ``smoke``: a few short clips).
    """

    name: str
    path: str
    description: str
    license: str
    origin: str
    deploy: bool
    files: tuple[FileEntry, ...]
    sources: tuple[FileEntry, ...] = ()
    convert: str | None = None
    selections: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def digest(self) -> str:
        """16 hex digits of sha256 over the files' ``sha256  path`` lines (sorted by path): the
        version of the data, as recorded with what is built from it (calibration sets)."""
        lines = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(self.files, key=lambda e: e.path))
        return hashlib.sha256(lines.encode()).hexdigest()[:16]

    def packaged_file(self, entry: FileEntry) -> Path:
        """The repository's copy of a ``packaged`` file."""
        return CATALOG_DIR / self.name / entry.path

    def selected(self, selection: str | None = None) -> tuple[FileEntry, ...]:
        """The files of ``selection`` plus every packaged file (the data set's own index and
        README), or all files when ``selection`` is None.

        Raises:
            FleetError: no such selection.
        """
        if selection is None:
            return self.files
        if selection not in self.selections:
            known = ", ".join(sorted(self.selections)) or "none"
            raise FleetError(f"data set '{self.name}' has no selection '{selection}'",
                             f"use one of: {known} (fleet/datasets/catalog/{self.name}.yml)")
        want = set(self.selections[selection])
        return tuple(f for f in self.files if f.path in want or f.packaged)


def _where(f: Path) -> str:
    return f"fleet/datasets/catalog/{f.name}"


def _file_entry(f: Path, raw, what: str) -> FileEntry:
    if not isinstance(raw, dict):
        raise FleetError(f"{_where(f)}: {what} must be a mapping with path, sha256, bytes", "see speech.yml")
    unknown = set(raw) - FILE_KEYS
    if unknown:
        raise FleetError(f"{_where(f)}: {what} {raw.get('path')!r} has unknown key(s) {', '.join(sorted(unknown))}",
                         f"known keys: {', '.join(sorted(FILE_KEYS))}")
    path, sha, size = raw.get("path"), str(raw.get("sha256", "")), raw.get("bytes")
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in Path(path).parts:
        raise FleetError(f"{_where(f)}: {what} path {path!r} must be relative to the data set's folder",
                         "write it like corpus.jsonl or sub/clip.wav")
    if not _SHA256.match(sha):
        raise FleetError(f"{_where(f)}: {path}: sha256 {sha!r} is not 64 lower-case hex digits",
                         f"write the output of: sha256sum {path}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise FleetError(f"{_where(f)}: {path}: bytes must be a whole number, got {size!r}", f"write: stat -c %s {path}")
    urls = raw.get("urls") or []
    if isinstance(urls, str) or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
        raise FleetError(f"{_where(f)}: {path}: urls must be a list of http(s) URLs, got {urls!r}",
                         "e.g. urls: [https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH]")
    return FileEntry(path=path, sha256=sha, bytes=size, urls=tuple(urls), packaged=bool(raw.get("packaged")))


def parse_dataset(f: Path) -> DataSet:
    """Read and check one catalog file.

    Raises:
        FleetError: YAML error, unknown key, a file entry without sha256/bytes, a file with no way
            to obtain it (no urls, not packaged, no converter), or a selection naming unknown files.
    """
    from fleet.datasets.convert import CONVERTERS

    try:
        raw = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise FleetError(f"{_where(f)}: YAML syntax error: {e}", "fix the catalog file") from None
    if not isinstance(raw, dict):
        raise FleetError(f"{_where(f)}: expected a mapping", "see fleet/datasets/catalog/speech.yml")
    unknown = set(raw) - KEYS
    if unknown:
        raise FleetError(f"{_where(f)}: unknown key(s) {', '.join(sorted(unknown))}", f"known keys: {', '.join(sorted(KEYS))}")
    if raw.get("name") != f.stem:
        raise FleetError(f"{_where(f)}: name {raw.get('name')!r} differs from the file name", f"set name: {f.stem}")
    if not isinstance(raw.get("path"), str) or raw["path"].startswith("/") or ".." in Path(raw["path"]).parts:
        raise FleetError(f"{_where(f)}: path {raw.get('path')!r} must be a folder relative to the data root",
                         "e.g. path: rag/cranfield")
    files = tuple(_file_entry(f, e, "file") for e in raw.get("files") or [])
    sources = tuple(_file_entry(f, e, "source") for e in raw.get("sources") or [])
    if not files:
        raise FleetError(f"{_where(f)}: no files listed", "list every file with path, sha256 and bytes")
    convert = raw.get("convert")
    if convert is not None and convert not in CONVERTERS:
        raise FleetError(f"{_where(f)}: unknown converter {convert!r}", f"use one of: {', '.join(sorted(CONVERTERS))}")
    made = [e.path for e in files if not e.urls and not e.packaged]
    if made and not (convert and sources):
        raise FleetError(f"{_where(f)}: no way to obtain {', '.join(made)}",
                         "give each file urls:, mark it packaged: true, or add sources: and convert:")
    paths = {e.path for e in files}
    selections = {}
    for sel, members in (raw.get("selections") or {}).items():
        missing = sorted(set(members or []) - paths)
        if missing:
            raise FleetError(f"{_where(f)}: selection '{sel}' names files not in the data set: {', '.join(missing)}",
                             "list files of files:")
        selections[str(sel)] = tuple(members)
    return DataSet(name=raw["name"], path=raw["path"], description=str(raw.get("description", "")),
                   license=str(raw.get("license", "")), origin=str(raw.get("origin", "")),
                   deploy=bool(raw.get("deploy", True)), files=files, sources=sources, convert=convert,
                   selections=selections)


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, DataSet]:
    """Every data set of the catalog, by name (parsed once per process).

    Raises:
        FleetError: a catalog file is malformed (names the file and the key).
    """
    return {f.stem: parse_dataset(f) for f in sorted(CATALOG_DIR.glob("*.yml"))}


def get_dataset(name: str) -> DataSet:
    """The catalog entry ``name``.

    Raises:
        FleetError: no such data set (with the closest names).
    """
    catalog = load_catalog()
    if name not in catalog:
        close = difflib.get_close_matches(name, catalog, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise FleetError(f"unknown data set '{name}'",
                         f"{hint}known data sets: {', '.join(sorted(catalog))} (fleet datasets list)")
    return catalog[name]
