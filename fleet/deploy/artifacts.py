"""Which model artifacts each board gets (contracts §3), and their sha256 check before deploy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import FleetError
from fleet.families import registry
from fleet.inventory import Board

DEFAULT_MODELS = ("whisper-tiny.en",)
EMULATION_QUANT = "int8-static-qdq"  # manifest quantization prefix of the emulation models


def target_entries(board: Board, entries: list[dict]) -> list[dict]:
    """The entries of ``board.accelerator``'s NPU build (``artifacts/<target>/<model>/``, the
    target of its board family: fleet.families) that board runs: the compiled HEF/RKNN on a real
    board; the static QDQ INT8 ONNX emulation models
    (fleet.models.quantize) on an emulated one; in both cases only the roles a pipeline of the
    agent loads (``device_agent.pipelines.npu_roles``: Whisper's full-NPU decoder, 117 MB as QDQ
    INT8, is built but no pipeline runs it). The build's fp32 NPU graphs and calibration sets stay
    on the controller. CPU boards get none."""
    from device_agent.pipelines import npu_roles

    fam = registry().find(board.accelerator)
    if fam is None or fam.build_target is None:
        return []
    mine = [e for e in entries if e.get("target") == fam.build_target
            and e.get("role") in npu_roles(str(e.get("model", "")))]
    if board.emulated:
        return [e for e in mine if e.get("format") == "onnx"
                and str(e.get("quantization", "")).startswith(EMULATION_QUANT)]
    return [e for e in mine if e.get("format") == fam.artifact_format]


def imported_entries(board: Board, entries: list[dict]) -> list[dict]:
    """The entries of an imported model (``fleet models import``, ``imported: true``) that ``board``
    can run: target ``cpu`` ONNX (and its reference) on every board; for the targets of the board's
    family (its own, or a compatible one: a hailo8l HEF on a hailo8) the compiled .hef/.rknn and its reference on a
    real board, the ONNX entries (the imported emulation model, or the reference standing in for a
    HEF/RKNN) on an emulated one; its input set (role ``inputs``, ``--data``) with them. [] when the
    board can run none of them."""
    fam, out = registry().find(board.accelerator), []
    runs = fam.targets if fam is not None else ()
    for e in entries:
        t, fmt = e.get("target"), e.get("format")
        if t == "cpu":
            out.append(e)
        elif t == board.accelerator or t in runs:
            if board.emulated and fmt == "onnx":
                out.append(e)
            elif e.get("role") == "inputs":  # the input set shipped with the model (--data)
                out.append(e)
            elif not board.emulated and ((fam is not None and fmt == fam.artifact_format)
                                         or e.get("role") == "reference"):
                out.append(e)
    return out


@dataclass(frozen=True)
class Artifact:
    """One manifest entry resolved against the artifacts folder.

    Attributes:
        model: model name (``whisper-tiny.en``).
        name: file name on the board (flat in ``models/<model>/``).
        src: absolute path on the controller.
        sha256: expected sha256 (hex).
        entry: the manifest entry as written by `fleet models build`.
    """

    model: str
    name: str
    src: Path
    sha256: str
    entry: dict


def build_hint(model: str) -> str:
    """The command that rebuilds a model's artifacts."""
    return f"fleet models build {model}"


def load_manifest(artifacts_dir: Path) -> dict:
    """Read ``artifacts/manifest.json``.

    Raises:
        FleetError: missing, not JSON, or without an ``artifacts`` list.
    """
    path = Path(artifacts_dir) / "manifest.json"
    if not path.is_file():
        raise FleetError(
            f"no artifact manifest at {path}",
            f"build the models first: {build_hint(DEFAULT_MODELS[0])} (or pass --artifacts DIR)",
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise FleetError(f"{path} is not valid JSON: {e}", f"rebuild it: {build_hint(DEFAULT_MODELS[0])}") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise FleetError(f"{path} has no 'artifacts' list", f"rebuild it: {build_hint(DEFAULT_MODELS[0])}")
    return data


def select(board: Board, manifest: dict, artifacts_dir: Path, models: tuple[str, ...] | None = None) -> list[Artifact]:
    """The artifacts ``board`` can run: target ``cpu`` entries of ``models`` (default: every model
    in the manifest) for every board, plus its accelerator's NPU build (``target_entries``):
    HEF/RKNN on a real board, the static QDQ INT8 emulation models on an emulated one. An imported
    model (``imported: true``) goes only where it runs (``imported_entries``), and not at all to a
    board that runs none of its files.

    Raises:
        FleetError: a built model has no ``cpu`` entries in the manifest, or a model is not in it.
    """
    root = Path(artifacts_dir).resolve()
    out: list[Artifact] = []
    if not models:
        models = tuple(sorted({str(e.get("model")) for e in manifest["artifacts"]}))
    for model in models:
        entries = [e for e in manifest["artifacts"] if e.get("model") == model]
        if entries and all(e.get("imported") for e in entries):
            chosen = imported_entries(board, entries)
            if all(e.get("role") == "inputs" for e in chosen):
                chosen = []  # input data alone is nothing to run
            for e in chosen:
                out.append(Artifact(model, Path(e["path"]).name, root / e["path"],
                                    str(e.get("sha256", "")).lower(), e))
            continue
        cpu = [e for e in entries if e.get("target") == "cpu"]
        if not cpu:
            raise FleetError(
                f"{root / 'manifest.json'} has no target 'cpu' artifacts for {model}",
                f"build them: {build_hint(model)}" + ("" if entries else
                                                      f"; or import it: fleet models import FILE --name {model} --target TARGET"),
            )
        chosen = list(cpu) + target_entries(board, entries)
        for e in chosen:
            rel = Path(e["path"])
            # On the board the model folder mirrors <target>/<model>/ (sub-folders kept, e.g. ct2/).
            base = Path(str(e.get("target", ""))) / model
            name = str(rel.relative_to(base)) if rel.is_relative_to(base) else rel.name
            out.append(Artifact(model, name, root / rel, str(e.get("sha256", "")).lower(), e))
    # Several entries may name one file (e.g. the tokenizer of the fp32 and int8 variants): fine
    # when it is the same file; two different files on one board path are a manifest bug.
    by_name: dict[tuple[str, str], set[str]] = {}
    for a in out:
        by_name.setdefault((a.model, a.name), set()).add(a.sha256)
    dup = sorted(n for n, shas in by_name.items() if len(shas) > 1)
    if dup:
        raise FleetError(
            f"artifacts {dup} are different files that would land on the same path on {board.name}",
            "give each artifact of a model its own file name",
        )
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(artifacts: list[Artifact]) -> None:
    """Check every artifact exists and has its manifest sha256 (each file hashed once).

    Raises:
        FleetError: one line per missing or corrupt file: path, expected and actual sha256, and
            the rebuild command.
    """
    problems, models, seen = [], set(), set()
    from fleet.models.manifest import rebuild_command

    hints = {a.model: (rebuild_command(a.entry) if a.entry.get("imported") else build_hint(a.model))
             for a in artifacts}
    for a in artifacts:
        if a.src in seen:
            continue
        seen.add(a.src)
        if not a.src.is_file():
            problems.append(f"{a.src}: missing (expected sha256 {a.sha256})")
            models.add(a.model)
            continue
        actual = sha256_file(a.src)
        if actual != a.sha256:
            problems.append(f"{a.src}: sha256 mismatch: expected {a.sha256}, actual {actual}")
            models.add(a.model)
    if problems:
        raise FleetError(
            "artifacts are missing or corrupt, nothing was deployed:\n  " + "\n  ".join(problems),
            "rebuild them: " + "; ".join(hints[m] for m in sorted(models)),
        )


def board_manifest(artifacts: list[Artifact], model: str, schema: int = 1) -> dict:
    """The manifest.json written to ``models/<model>/`` on a board: only the entries copied,
    with ``path`` made relative to that folder (the file name)."""
    entries = []
    for a in artifacts:
        if a.model == model:
            entries.append({**a.entry, "path": a.name})
    return {"schema": schema, "artifacts": entries}
