"""``fleet models build``: build one (model, target) into ``artifacts/``, cached and all-or-nothing.

The model's recipe (fleet.models.recipes: one file per model) says what to build and how to
verify it; the skeleton around it (fleet.models.skeleton) is shared with the NPU build
(fleet.models.target_build, which this module calls for NPU targets; it does not import this one):

- Cache: if manifest.json already lists every artifact of (model, target), each file on disk has
  its recorded sha256, and the source sha256 and exporter versions are today's, nothing is done.
- Atomic: files are written to a temp folder inside ``out`` and swapped into
  ``out/<target>/<model>/`` only after every check passed; manifest.json is then rewritten
  atomically. A failed build leaves the previous artifacts and manifest untouched.
"""

from __future__ import annotations

import time
from pathlib import Path

from fleet.errors import FleetError
from fleet.models import manifest as mf
from fleet.models import recipes
from fleet.models.skeleton import Report, cached_group, swap_in, toolchain_versions
from fleet.models.skeleton import build_group as _build_group

__all__ = ["CPU", "EXPORTER_PACKAGES", "Report", "build", "npu_toolchains", "targets",
           "exporter_info", "source_info", "swap_in", "up_to_date"]

CPU = "cpu"


def npu_toolchains() -> dict[str, str]:
    """NPU build target -> what its toolchain needs: the board families' ``toolchain_hint``
    (fleet.families; docs/reference/device_apis.md, docs/reference/field.md)."""
    from fleet.families import registry

    return {f.build_target: f.toolchain_hint for f in registry().families.values() if f.build_target}


def targets() -> tuple[str, ...]:
    """``cpu`` and every NPU build target."""
    return (CPU, *npu_toolchains())


EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "transformers")


def __getattr__(name: str):
    """``KNOWN_MODELS``: the registry's model names (fleet.models.recipes.names()); ``NPU_TOOLCHAINS``
    and ``TARGETS``: from the board families (older callers). Computed on use, so importing this
    module loads no recipe, family or plug-in."""
    if name == "KNOWN_MODELS":
        return recipes.names()
    if name == "NPU_TOOLCHAINS":
        return npu_toolchains()
    if name == "TARGETS":
        return targets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def exporter_info() -> dict:
    """Versions of the export toolchain (from package metadata, no imports) and the ONNX opset."""
    from fleet.models.onnx_export import OPSET
    from fleet.models.quantize import QDQ_SCHEME

    # a QDQ scheme change rebuilds the static INT8 models
    return toolchain_versions(EXPORTER_PACKAGES, opset=OPSET, qdq_scheme=QDQ_SCHEME)


def source_info(model: str = "whisper-tiny.en") -> dict:
    """The weights' source of ``model`` (its recipe's ``source_info``): package, version, sha256.

    Raises:
        FleetError: unknown model, or the source package missing or not the pinned version.
    """
    return recipes.get(model).source_info()


def _check_request(model: str, target: str):
    recipe = recipes.get(model)
    if target != CPU and target not in npu_toolchains():
        raise FleetError(f"unknown target {target!r}; targets: {', '.join(targets())}",
                         f"use one of: {', '.join(targets())}")
    return recipe


def up_to_date(model: str, target: str, out: Path, source: dict,
               exporter: dict) -> list[dict] | None:
    """The manifest entries of (model, target) if the build can be skipped, else None.

    Skippable when every expected (role, variant) of the recipe is listed, every listed file
    exists with its recorded sha256, and every entry's source and exporter equal
    ``source``/``exporter`` (fleet.models.skeleton.cached_group).
    """
    expected = {(r, v) for r, v, _ in recipes.get(model).expected_files()}
    return cached_group(model, target, out, expected, source, exporter)


def build(model: str, target: str, out: Path, force: bool = False,
          report: Report | None = None, require_compiler: bool = False,
          calib_n: int = 64) -> list[dict]:
    """Build (or find up to date) the artifacts of ``model`` for ``target`` under ``out``.

    Args:
        model: a registered recipe's name (``fleet models list``: ``whisper-tiny.en`` ...).
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
    recipe = _check_request(model, target)
    if target in npu_toolchains():
        from fleet.models.target_build import build_target

        return build_target(model, target, out, force=force, report=report,
                            require_compiler=require_compiler, calib_n=calib_n)
    out = Path(out).resolve()
    source, exporter = recipe.source_info(), exporter_info()

    def make(work: Path, rel: str) -> list[dict]:
        entries, _ = recipe.build_cpu(work, report)
        for i, e in enumerate(entries):
            f = work / e["path"]
            entries[i] = {**{k: e[k] for k in ("model", "role", "variant", "target", "format")},
                          "path": f"{rel}/{e['path']}", "sha256": mf.sha256_file(f),
                          "bytes": f.stat().st_size, "inputs": e["inputs"],
                          "outputs": e["outputs"], "quantization": e["quantization"],
                          "source": source, "exporter": exporter}
        return entries

    return _build_group(model, target, out, report, force=force,
                        cached=lambda: up_to_date(model, target, out, source, exporter),
                        make=make, same="source and exporter", t0=t0)
