"""artifacts/manifest.json: read, merge, write atomically; verify one artifact (contracts.md §3).

Format::

    {"schema": 1, "artifacts": [entry, ...]}

An entry is a plain dict: model, role, variant, target, format, path (relative to the artifacts
root), sha256, bytes, inputs, outputs, quantization, source, exporter; NPU-target entries add
toolchain, compiled (+ compile_reason) and calibration (entry_problems); imported entries
(``fleet models import``) say ``imported: true`` and name their source file. Entries are unique by
(model, role, variant, target).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from fleet.errors import FleetError

SCHEMA = 1
MANIFEST = "manifest.json"
KEY_FIELDS = ("model", "role", "variant", "target")
REQUIRED = ("model", "role", "variant", "target", "format", "path", "sha256", "bytes")
# NPU-target entries (fleet.models.target_build) also say how they were made (contracts.md §3)
NPU_REQUIRED = ("toolchain", "quantization", "compiled")
CALIBRATION_FIELDS = ("path", "sha256", "n")


def entry_problems(entry: dict) -> list[str]:
    """What an entry lacks: REQUIRED fields; for targets other than cpu also ``toolchain``
    {name, version}, ``quantization``, ``compiled`` (bool; ``compile_reason`` when false) and,
    on quantized variants (not fp32), ``calibration`` {path, sha256, n}. Imported entries
    (``imported: true``, fleet.models.importer) need ``source`` {path, sha256} and no calibration."""
    if not isinstance(entry, dict):
        return ["is not an object"]
    missing = [k for k in REQUIRED if k not in entry]
    if entry.get("imported"):
        src = entry.get("source")
        if not (isinstance(src, dict) and src.get("path") and src.get("sha256")):
            missing.append("source.path/sha256")
    if missing or entry["target"] == "cpu":
        return missing
    missing += [k for k in NPU_REQUIRED if k not in entry]
    tc = entry.get("toolchain")
    if "toolchain" in entry and not (isinstance(tc, dict) and "name" in tc and "version" in tc):
        missing.append("toolchain.name/version")
    if entry.get("compiled") is False and not entry.get("compile_reason"):
        missing.append("compile_reason")
    if entry.get("variant") != "fp32" and not entry.get("imported"):  # an import's calibration is the lab's
        cal = entry.get("calibration")
        if not isinstance(cal, dict):
            missing.append("calibration")
        else:
            missing += [f"calibration.{k}" for k in CALIBRATION_FIELDS if k not in cal]
    return missing


def entry_key(entry: dict) -> tuple[str, str, str, str]:
    """(model, role, variant, target) of an entry."""
    return tuple(entry[k] for k in KEY_FIELDS)  # type: ignore[return-value]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def rebuild_command(entry: dict) -> str:
    """The command that rebuilds an entry's artifacts."""
    model, target = entry.get("model", "?"), entry.get("target", "?")
    if entry.get("imported"):
        src = (entry.get("source") or {}).get("path", "FILE")
        return f"fleet models import {src} --name {model} --target {target} --force"
    return f"fleet models build {model} --target {target} --force"


def read_manifest(root: Path) -> list[dict]:
    """Entries of ``root/manifest.json``; [] if the file does not exist.

    Raises:
        FleetError: the file is not JSON, has another schema, or an entry lacks a field.
    """
    path = Path(root) / MANIFEST
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FleetError(f"{path}: cannot read manifest ({e})",
                         "delete it and rebuild: fleet models build MODEL") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA \
            or not isinstance(doc.get("artifacts"), list):
        raise FleetError(f"{path}: not a schema-{SCHEMA} fleet manifest",
                         "delete it and rebuild: fleet models build MODEL")
    for i, e in enumerate(doc["artifacts"]):
        missing = entry_problems(e)
        if missing:
            raise FleetError(f"{path}: artifact #{i} lacks {', '.join(missing)}",
                             "delete it and rebuild: fleet models build MODEL")
    return doc["artifacts"]


def merge(old: list[dict], new: list[dict],
          replace_group: tuple[str, str] | None = None) -> list[dict]:
    """Merge entries by (model, role, variant, target): ``new`` wins.

    Args:
        old: current entries.
        new: entries to add or replace.
        replace_group: (model, target) whose old entries are all dropped first (a rebuild
            replaces that folder as a whole, so entries it no longer produces must go).

    Returns:
        entries sorted by (target, model, role, variant).
    """
    merged = {}
    for e in old:
        if replace_group and (e["model"], e["target"]) == replace_group:
            continue
        merged[entry_key(e)] = e
    for e in new:
        merged[entry_key(e)] = e
    return sorted(merged.values(), key=lambda e: (e["target"], e["model"], e["role"], e["variant"]))


def write_manifest(root: Path, entries: list[dict]) -> Path:
    """Write ``root/manifest.json`` atomically (temp file in the same folder + os.replace).

    Raises:
        FleetError: two entries share a (model, role, variant, target) key.
    """
    root = Path(root)
    keys = [entry_key(e) for e in entries]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise FleetError(f"manifest entries repeat {sorted(dupes)}",
                         "merge entries with fleet.models.manifest.merge()", exit_code=3)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"schema": SCHEMA, "artifacts": entries}, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o644 & ~mask)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def verify_artifact(entry: dict, root: Path) -> None:
    """Check that an entry's file exists under ``root`` with the recorded sha256.

    Args:
        entry: a manifest entry (needs path, sha256; model/target for the fix).
        root: the artifacts root the entry's path is relative to.

    Raises:
        FleetError: the file is missing, or its sha256 differs. The message names the path,
            the expected and the actual sha256; the fix gives the rebuild command.
    """
    path = Path(root) / entry["path"]
    fix = f"rebuild it: {rebuild_command(entry)}"
    if not path.is_file():
        raise FleetError(f"artifact {path} is missing (expected sha256 {entry['sha256']})", fix)
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise FleetError(f"artifact {path} has sha256 {actual}, manifest expects "
                         f"{entry['sha256']}", fix)
