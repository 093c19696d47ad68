"""The build skeleton every (model, target) build shares: progress report, exporter versions,
up-to-date check, and the temp-folder-and-swap that makes a build all-or-nothing.

fleet.models.build (cpu) and fleet.models.target_build (NPU targets) both run on it; neither
imports the other's internals.

- Cache (``cached_group``): manifest.json lists exactly the expected (role, variant) keys of
  (model, target), every file (and calibration set) on disk has its recorded sha256, and every
  entry's source and exporter are today's.
- Atomic (``build_group``): files are written to a temp folder inside ``out`` and swapped into
  ``out/<target>/<model>/`` only after every check passed; manifest.json is then rewritten
  atomically. A failed build leaves the previous artifacts and manifest untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from fleet.errors import FleetError
from fleet.models import manifest as mf


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


def package_version(pkg: str) -> str:
    """Installed version of ``pkg`` from its metadata (no import), or ``missing``."""
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "missing"


def toolchain_versions(packages: tuple[str, ...], **extra) -> dict:
    """{package: version} of ``packages`` (package metadata, no imports), then ``extra``.

    The key order is the manifest's (packages first, then the extra keys as given), so the
    manifest bytes of an unchanged build do not change.
    """
    return {**{pkg: package_version(pkg) for pkg in packages}, **extra}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def group_entries(out: Path, model: str, target: str) -> list[dict] | None:
    """The manifest entries of (model, target) under ``out``, or None when the manifest is broken."""
    try:
        return [e for e in mf.read_manifest(out) if (e["model"], e["target"]) == (model, target)]
    except FleetError:
        return None


def cached_group(model: str, target: str, out: Path, expected: set[tuple[str, str]], source: dict,
                 exporter: dict, accept: Callable[[dict], bool] | None = None) -> list[dict] | None:
    """The manifest entries of (model, target) if the build can be skipped, else None.

    Skippable when the (role, variant) keys equal ``expected``, every entry's source and exporter
    equal ``source``/``exporter``, ``accept(entry)`` holds (target builds: the compile state), and
    every listed file and calibration set exists with its recorded sha256.
    """
    entries = group_entries(out, model, target)
    if entries is None or {(e["role"], e["variant"]) for e in entries} != expected:
        return None
    for e in entries:
        if e.get("source") != source or e.get("exporter") != exporter:
            return None
        if accept is not None and not accept(e):
            return None
        try:
            mf.verify_artifact(e, out)
            cal = e.get("calibration")
            if cal:
                mf.verify_artifact({**e, "path": cal["path"], "sha256": cal["sha256"]}, out)
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


def build_group(model: str, target: str, out: Path, report: Report, *, force: bool,
                cached: Callable[[], list[dict] | None], make: Callable[[Path, str], list[dict]],
                same: str, t0: float) -> list[dict]:
    """Skip when up to date, else build into a temp folder and swap it in (module docstring).

    Args:
        model, target: the group built (``out/<target>/<model>/``).
        out: artifacts root (resolved).
        report: progress sink; gets ``metrics["cached"]`` and ``metrics["build_s"]``.
        force: build even when ``cached()`` returns entries.
        cached: returns the group's entries when the build can be skipped, else None.
        make: ``make(work, rel)`` writes the files into the empty folder ``work`` and returns
            complete manifest entries whose paths start with ``rel`` (``<target>/<model>``).
        same: what "up to date" compared, for the message ("source and exporter").
        t0: time.perf_counter() at the start of the build (for ``build_s``).

    Returns:
        the group's manifest entries.

    Raises:
        FleetError: whatever ``make`` raises, or a broken manifest; nothing under ``out``
            changes then.
    """
    if not force:
        entries = cached()
        if entries is not None:
            report.metrics["cached"] = True
            report.info(f"[green]✓[/green] {model} ({target}) is up to date in {out}: "
                        f"{len(entries)} entries, sha256 match, same {same} "
                        f"(use --force to rebuild)")
            return entries
    report.metrics["cached"] = False
    existing = mf.read_manifest(out)  # fail early on a broken manifest, not after the build
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{model}-{target}-", dir=out))
    try:
        entries = swap_in(work, out, model, target, make(work, f"{target}/{model}"), existing)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    total = sum(e["bytes"] for e in {e["path"]: e for e in entries}.values())
    report.metrics["build_s"] = round(time.perf_counter() - t0, 1)
    report.info(f"[green]✓[/green] wrote {len(entries)} entries ({total / 1e6:.1f} MB) to "
                f"{out / target / model} and {out / mf.MANIFEST} "
                f"[dim](total {report.metrics['build_s']:.1f} s)[/dim]")
    return entries
