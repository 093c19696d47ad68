"""Before `fleet deploy` copies anything: each board's Python, and whether the agent can be
installed on it.

A board installs the agent offline, from wheels only (no compiler, no internet), so a pinned
dependency without a wheel for the board's Python and platform cannot be installed there, and the
fleet wheel itself needs ``requires-python`` of pyproject.toml. Both are known on the controller
before a byte is copied:

- **the board's Python**: host var ``fleet_python_version`` when the inventory says it; else it is
  gathered from the board with one Ansible ``raw`` task (playbooks/probe.yml: no module copied, no
  Python needed on the board beyond the interpreter it asks) that runs the board's
  ``ansible_python_interpreter`` and prints ``MAJOR.MINOR`` and ``platform.machine()``;
- **the wheelhouse** for (platform, Python), built as today (fleet.deploy.wheelhouse). When pip
  finds no wheel for a requirement, or the board's Python is outside requires-python, every board
  needing that wheelhouse is **refused**: it gets no task at all (status ``refused``, the package,
  its version, the board's Python and platform, and what would work: the Pythons the pinned version
  has wheels for there, and the newest version with a wheel for the board's Python). The other
  boards are deployed, and the run exits 1, as a play goes on past a failed host and
  ansible-playbook exits non-zero.

What would work is looked up with ``pip index versions --json`` (pip's target options
``--python-version --platform --implementation cp --only-binary=:all:``) against the index the
wheelhouse uses, and only when a board is refused.

Public sources: pip download / pip index (pip documentation, "--platform", "--python-version"),
PEP 425 (compatibility tags), PEP 508 (requirements), Ansible ``raw`` module documentation.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from fleet.deploy.wheelhouse import NoWheel, agent_dependencies, expand_platform

#: Pythons a pinned version is checked against when saying which would work.
CANDIDATE_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
#: Debian's python3 per release, for the fix text (what a reflashed board would have).
DEBIAN_PYTHONS = {"3.9": "Debian 11 bullseye", "3.11": "Debian 12 bookworm", "3.13": "Debian 13 trixie"}
PROBE_MARK = "FLEET-PYTHON"
PROBE_PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "probe.yml"


@dataclass
class Probe:
    """What gathering a board's Python found.

    Attributes:
        host: inventory hostname.
        python_version: MAJOR.MINOR of the board's ``ansible_python_interpreter``, "" when unknown.
        machine: ``platform.machine()`` on the board (``aarch64``), "" when unknown.
        status: ``ok`` | ``unreachable`` | ``failed``.
        reason: why not ok ("" when ok).
    """

    host: str
    python_version: str = ""
    machine: str = ""
    status: str = "failed"
    reason: str = "Ansible reported nothing for this host while gathering its Python"


def probe_events(hosts: list[str]):
    """(ansible-runner event handler, results by host) for a run of playbooks/probe.yml."""
    results = {h: Probe(h) for h in hosts}

    def handler(event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        res = data.get("res", {}) or {}
        p = results.get(data.get("host", ""))
        if p is None:
            return True
        if kind == "runner_on_ok":
            parsed = parse_probe(str(res.get("stdout", "")))
            if parsed:
                p.python_version, p.machine = parsed
                p.status, p.reason = "ok", ""
            else:
                p.status, p.reason = "failed", f"gathering the board's Python: no '{PROBE_MARK}' line in {res.get('stdout', '')!r}"
        elif kind in ("runner_on_unreachable", "runner_on_failed"):
            msg = str(res.get("msg", "")).strip()
            err = " | ".join(x for x in (_last_line(res.get("stderr")), _last_line(res.get("stdout"))) if x)
            p.status = "unreachable" if kind == "runner_on_unreachable" else "failed"
            p.reason = "gathering the board's Python: " + (" | ".join(x for x in (msg, err) if x) or "no message")
        return True

    return handler, results


def _last_line(value) -> str:
    text = str(value or "").strip()
    return text.splitlines()[-1] if text else ""


def parse_probe(stdout: str) -> tuple[str, str] | None:
    """(MAJOR.MINOR, machine) from the probe's output, None when its line is not there."""
    m = re.search(rf"^{PROBE_MARK} (\d+\.\d+) (\S+)\s*$", stdout.replace("\r", ""), re.M)
    return (m.group(1), m.group(2)) if m else None


def requires_python(project: Path) -> str:
    """``[project].requires-python`` of pyproject.toml ("" when unset or unreadable)."""
    try:
        return str(tomllib.loads((project / "pyproject.toml").read_text()).get("project", {}).get("requires-python", ""))
    except (OSError, tomllib.TOMLDecodeError):
        return ""


@functools.lru_cache(maxsize=256)
def index_versions(name: str, python_version: str, platform: str) -> tuple[str, ...]:
    """Versions of ``name`` with a wheel for CPython ``python_version`` on ``platform`` (all the
    manylinux tags it accepts; "" = the controller's own), newest first, from ``pip index
    versions --json``; () when there is none or the index cannot be asked."""
    args = [sys.executable, "-m", "pip", "index", "versions", name, "--json", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in expand_platform(platform) if platform else []:
        args += ["--platform", tag]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        return tuple(json.loads(proc.stdout).get("versions", [])) if proc.returncode == 0 else ()
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return ()


@dataclass
class Missing:
    """One requirement the board cannot install.

    Attributes:
        requirement: as pinned (``onnxruntime==1.31.1``).
        name: the project name (``onnxruntime``).
        pythons: the Pythons (of CANDIDATE_PYTHONS) the pinned version has wheels for on the platform.
        newest_for_board: the newest version of the project with a wheel for the board's Python, "" if none.
    """

    requirement: str
    name: str
    pythons: list[str] = field(default_factory=list)
    newest_for_board: str = ""


def missing_wheels(requirements: list[str], platform: str, python_version: str, lookup=None) -> list[Missing]:
    """The requirements with no wheel satisfying them for (platform, Python), each with what would work.

    Args:
        requirements: PEP 508 requirements (the agent's dependencies).
        platform: pip platform tag, "" for the controller's own.
        python_version: the board's MAJOR.MINOR.
        lookup: ``(name, python, platform) -> versions`` (default: index_versions, real pip).
    """
    lookup = lookup or index_versions
    reqs = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"python_version": python_version}):
            reqs.append((text, req))
    with ThreadPoolExecutor(max_workers=8) as pool:  # one index request each: ask them together
        on_board = dict(zip([t for t, _ in reqs], pool.map(lambda r: lookup(r[1].name, python_version, platform), reqs)))
        bad = [(t, r) for t, r in reqs if not list(r.specifier.filter(on_board[t], prereleases=False))]
        asks = [(r.name, py) for _, r in bad for py in CANDIDATE_PYTHONS]
        found = dict(zip(asks, pool.map(lambda a: lookup(a[0], a[1], platform), asks)))
    out = []
    for text, req in bad:
        pythons = [py for py in CANDIDATE_PYTHONS if list(req.specifier.filter(found[(req.name, py)]))]
        board = on_board[text]
        out.append(Missing(text, req.name, pythons, board[0] if board else ""))
    return out


@dataclass
class Refusal:
    """Why every board needing one wheelhouse is refused (same for each of them).

    Attributes:
        platform: the pip platform tag ("" = the controller's).
        python_version: the boards' Python.
        problems: one sentence per blocker (requires-python, each requirement without a wheel).
        fix: what would work.
    """

    platform: str
    python_version: str
    problems: list[str]
    fix: str

    def reason(self, host: str, machine: str = "") -> str:
        """The host's reason line (what `fleet deploy` shows, deploy.json's ``reason``)."""
        where = self.platform or "the controller's platform"
        arch = f" ({machine})" if machine and machine not in where else ""
        return (f"refused before anything was copied: the board's Python {self.python_version} on {where}{arch}: "
                + "; ".join(self.problems) + f" | fix: {self.fix}")


def _versions(pys: list[str]) -> str:
    """``3.11 to 3.14`` for a run of CANDIDATE_PYTHONS, else ``3.9, 3.11``."""
    idx = [CANDIDATE_PYTHONS.index(p) for p in pys]
    run = len(pys) >= 3 and idx == list(range(idx[0], idx[0] + len(idx)))
    return f"{pys[0]} to {pys[-1]}" if run else ", ".join(pys)


def refusal(project: Path, platform: str, python_version: str, no_wheel: NoWheel | None = None,
            lookup=None) -> Refusal | None:
    """The refusal of boards with this (platform, Python), or None when nothing blocks them.

    Args:
        project: the fleet checkout (pyproject.toml: requires-python and the agent's dependencies).
        platform, python_version: the wheelhouse's target.
        no_wheel: what the wheelhouse build raised, if it did (its requirement is always named,
            even when the index lookups cannot confirm it).
        lookup: as for missing_wheels.
    """
    problems: list[str] = []
    rp = requires_python(project)
    need = SpecifierSet(rp) if rp else None
    if need is not None and not need.contains(python_version, prereleases=True):
        problems.append(f"fleet itself (the agent's own package) needs Python {rp} (pyproject.toml requires-python)")
    if no_wheel is None and not problems:
        return None
    missing = missing_wheels(agent_dependencies(project), platform, python_version, lookup)
    # an entry the index said nothing about (no version for any Python) is an index that did not
    # answer as often as a package without wheels: only pip's own word names such a requirement
    missing = [m for m in missing if m.pythons or m.newest_for_board
               or (no_wheel is not None and m.requirement == no_wheel.requirement)]
    if no_wheel is not None and not any(m.requirement == no_wheel.requirement for m in missing):
        name = re.split(r"[=<>!~\[; ]", no_wheel.requirement, maxsplit=1)[0]
        missing.insert(0, Missing(no_wheel.requirement, name))
    where = platform or "this platform"
    fixes: list[str] = []
    for m in missing:
        pin = m.requirement.split(";")[0].strip()
        problems.append(f"no wheel of {pin} (an agent dependency) for Python {python_version}")
        has = f"{pin} has wheels for Python {_versions(m.pythons)} on {where}" if m.pythons else \
            f"{pin} has no wheel on {where} for any Python {CANDIDATE_PYTHONS[0]} to {CANDIDATE_PYTHONS[-1]}"
        older = (f"the newest {m.name} with a wheel for Python {python_version} is {m.newest_for_board}"
                 if m.newest_for_board else f"no {m.name} version has a wheel for Python {python_version}")
        fixes.append(f"{has}; {older}")
    works = [py for py in CANDIDATE_PYTHONS
             if (need is None or need.contains(py, prereleases=True)) and all(py in m.pythons for m in missing)]
    if works:
        debs = [f"{DEBIAN_PYTHONS[py]} ships {py}" for py in works if py in DEBIAN_PYTHONS]
        fixes.append(f"a board Python of {_versions(works)} would work" + (f" ({', '.join(debs)})" if debs else "")
                     + ": reflash the board, or install that python3 on it and set ansible_python_interpreter "
                       "(or fleet_python_version, if the inventory mis-states it)")
    if need is not None and not need.contains(python_version, prereleases=True):
        fixes.append(f"an older pin alone is not enough: the agent itself needs Python {rp}")
    elif missing:
        fixes.append("or pin the older versions in pyproject.toml [project].dependencies, if the agent works with them")
    return Refusal(platform, python_version, problems, "; ".join(fixes))
