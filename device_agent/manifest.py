"""Artifact manifests on the board: ``{fleet_root}/models/<model>/manifest.json``.

Same schema as the controller's ``artifacts/manifest.json`` (docs/contracts.md §3), holding only
the entries deployed to this board; the files sit flat next to it, so an entry's file is the
basename of its ``path``. Every artifact is checked against its sha256 before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .protocol import ModelError

MANIFEST = "manifest.json"
SCHEMA = 1
_FIX_DEPLOY = "redeploy the models (fleet deploy), or rebuild them (fleet models build) first"


@dataclass(frozen=True)
class Artifact:
    """One manifest entry, located in ``model_dir``. ``entry`` is the raw manifest dict."""

    model_dir: Path
    entry: dict

    @cached_property  # one stat per entry: `info` lists every entry twice (models, stack)
    def path(self) -> Path:
        """The file: ``path`` relative to the model folder as deploy lays it out (``encoder.onnx``,
        ``ct2/model.bin``); a controller-style path (``cpu/<model>/x``) falls back to its name.
        Absolute paths and ``..`` never leave the folder. Looked up once per Artifact (entries are
        re-read from the manifest on every call that lists them)."""
        rel = Path(str(self.entry.get("path", "")))
        if rel.is_absolute() or ".." in rel.parts:
            return self.model_dir / rel.name
        p = self.model_dir / rel
        return p if p.exists() else self.model_dir / rel.name

    @cached_property
    def file(self) -> str:
        """``path`` relative to the model folder, as text."""
        return str(self.path.relative_to(self.model_dir))

    @property
    def sha256(self) -> str:
        return str(self.entry.get("sha256", ""))

    def get(self, key: str, default=None):
        """A manifest field (role, variant, target, format, inputs, outputs, bytes, …)."""
        return self.entry.get(key, default)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(model_dir: str | os.PathLike) -> list[Artifact]:
    """The entries of ``model_dir/manifest.json``.

    Raises:
        ModelError: model_dir or its manifest missing, unreadable, wrong schema, or an entry
            without path/sha256.
    """
    d = Path(model_dir)
    mf = d / MANIFEST
    if not d.is_dir():
        raise ModelError(f"model folder {d} not found", _FIX_DEPLOY)
    if not mf.is_file():
        raise ModelError(f"{mf} not found", _FIX_DEPLOY)
    try:
        data = json.loads(mf.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {mf}: {e}", _FIX_DEPLOY) from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise ModelError(f"{mf} has no 'artifacts' list", _FIX_DEPLOY)
    if data.get("schema", SCHEMA) != SCHEMA:
        raise ModelError(f"{mf} has schema {data.get('schema')}, this agent reads schema {SCHEMA}",
                         "upgrade the agent (fleet deploy) to match the controller")
    out = []
    for i, e in enumerate(data["artifacts"]):
        if not isinstance(e, dict) or not e.get("path") or not e.get("sha256"):
            raise ModelError(f"{mf}: entry {i} lacks path or sha256", _FIX_DEPLOY)
        out.append(Artifact(d, e))
    return out


#: read_manifest results for the listings in ``info`` (list_models, the stack's collect_models),
#: by manifest folder -> ((st_ino, st_mtime_ns, st_size), entries): `info` lists every manifest
#: twice per call and may be asked often; a deploy that rewrites a manifest changes its key.
_LISTED: dict[str, tuple[tuple, list[Artifact]]] = {}


def read_manifest_listed(model_dir: str | os.PathLike) -> list[Artifact]:
    """``read_manifest`` for listings: the same entries while ``manifest.json`` is unchanged (same
    inode, mtime and size). Pipelines and verification read the manifest afresh. Raises as
    read_manifest."""
    d = Path(model_dir)
    try:
        st = (d / MANIFEST).stat()
    except OSError:
        return read_manifest(d)  # raises the ModelError that says what is missing
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _LISTED.get(str(d))
    if hit is not None and hit[0] == key:
        return hit[1]
    arts = read_manifest(d)
    _LISTED[str(d)] = (key, arts)
    return arts


def find(artifacts: list[Artifact], **match) -> Artifact | None:
    """The first entry whose fields equal every ``match`` item (e.g. role='encoder', variant='int8')."""
    for a in artifacts:
        if all(a.entry.get(k) == v for k, v in match.items()):
            return a
    return None


def verify(artifact: Artifact) -> str:
    """Check the file exists and its sha256 equals the manifest's. Returns the sha256.

    Raises:
        ModelError: file missing, or sha256 mismatch (message gives expected and actual).
    """
    p = artifact.path
    if not p.is_file():
        raise ModelError(f"artifact {p} listed in {artifact.model_dir / MANIFEST} is missing", _FIX_DEPLOY)
    actual = sha256_file(p)
    if actual != artifact.sha256:
        raise ModelError(f"sha256 mismatch for {p}: manifest expects {artifact.sha256}, file has {actual}",
                         "the file is corrupt or stale: " + _FIX_DEPLOY)
    return actual


#: NPU artifact formats and the runtime that refuses a file built for another chip
#: (docs/reference/device_apis.md §5.3: HailoRT "HEF format is not compatible with device", HAILO_INVALID_HEF;
#: an .rknn is built for one ``target_platform``, §3.2).
NPU_FORMATS = {"hef": "HailoRT", "rknn": "the RKNN runtime"}


def compatible() -> set[tuple[str, str]]:
    """(artifact arch, board accelerator) pairs that run although they differ, from the board
    families' ``targets``: HailoRT configures a Hailo-8L HEF on a Hailo-8 (hailort ``hef.cpp``:
    "Hailo8 can work with Hailo8L configurations")."""
    from .families import registry

    return registry().compatible()


def npu_arch(artifact: Artifact) -> str | None:
    """The accelerator an NPU artifact was compiled for: ``hw_arch`` (or ``exporter.hw_arch``,
    the Hailo DFC's name) or ``target_platform`` (rknn-toolkit2's), else ``target``; None for a
    non-NPU entry. Same rule as the stack fingerprint's ``hef_arch`` (docs/contracts.md §4)."""
    if artifact.get("format") not in NPU_FORMATS:
        return None
    exp = artifact.get("exporter") or {}
    exp = exp if isinstance(exp, dict) else {}
    v = (artifact.get("hw_arch") or exp.get("hw_arch") or artifact.get("target_platform")
         or exp.get("target_platform") or artifact.get("target"))
    return str(v).lower() if v else None


def check_npu_targets(model_dir: str | os.PathLike, accelerator: str) -> None:
    """Refuse a model folder holding an NPU artifact (.hef, .rknn) compiled for another accelerator
    than this board's, before anything is loaded: the runtime would reject it later with a
    less clear error, and a deploy never puts such a file on a board (docs/contracts.md §3).
    A folder whose manifest cannot be read is left to the pipeline to report.

    Raises:
        ModelError: names the file, its architecture and the board's, and how to rebuild.
    """
    try:
        arts = read_manifest(model_dir)
    except ModelError:
        return
    for a in arts:
        arch = npu_arch(a)
        if arch and arch != accelerator and (arch, accelerator) not in compatible():
            fmt = str(a.get("format"))
            raise ModelError(
                f"{a.path} is a {fmt.upper()} compiled for {arch}, but this board's accelerator is "
                f"{accelerator} ({NPU_FORMATS[fmt]} refuses it"
                + (': "HEF format is not compatible with device", HAILO_INVALID_HEF)' if fmt == "hef" else ")"),
                f"compile it for {accelerator} ("
                + (f'Hailo DFC ClientRunner(hw_arch="{accelerator}")' if fmt == "hef"
                   else f'rknn-toolkit2 config(target_platform="{accelerator}")')
                + "), then fleet models build and fleet deploy; or remove the entry from the board's "
                "manifest.json")


def list_models(models_root: str | os.PathLike) -> dict:
    """Models under ``models_root`` as ``{model: {"files": {file: {sha256, role, variant, target,
    format, bytes}}}}`` read from their manifests (files are not hashed here); a model whose
    manifest cannot be read gets ``{"error": message}``."""
    root = Path(models_root)
    out: dict = {}
    if not root.is_dir():
        return out
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            arts = read_manifest_listed(d)
        except ModelError as e:
            out[d.name] = {"error": e.message}
            continue
        out[d.name] = {"files": {a.file: {"sha256": a.sha256, **{k: a.get(k) for k in
                                          ("role", "variant", "target", "format", "bytes")},
                                          "present": a.path.is_file()}
                                 for a in arts}}
    return out
