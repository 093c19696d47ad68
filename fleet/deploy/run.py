"""Run playbooks/site.yml through ansible-runner and gather one result per host."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from fleet import paths
from fleet.deploy import preflight
from fleet.deploy.events import EventCollector, HostResult
from fleet.deploy.plan import make_plan
from fleet.errors import EXIT_INFRA, EXIT_OK, EXIT_TESTS_FAILED, FleetError
from fleet.inventory import ansible_env, default_inventory, load_inventory

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
KEEP_RUNS = 10


@dataclass
class DeployResult:
    """Outcome of one `fleet deploy`.

    Attributes:
        run_id: ``deploy-YYYYmmdd-HHMMSS-xxxx``; its folder is ``runs/<run_id>/``.
        run_dir: that folder (ansible-runner's private data dir is ``ansible/`` in it).
        status: ansible-runner's status (``successful``, ``failed``, ...).
        rc: ansible-playbook's exit code.
        seconds: wall time of the whole deploy (plan + Ansible).
        hosts: one result per host, sorted by name.
        notes: things skipped on purpose (e.g. no suite data).
    """

    run_id: str
    run_dir: str
    status: str
    rc: int
    seconds: float
    hosts: list[HostResult]
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every host succeeded; 1 when a host failed or was refused; 3 when hosts were unreachable."""
        if any(h.status in ("failed", "not run", "refused") for h in self.hosts):
            return EXIT_TESTS_FAILED
        if any(h.status == "unreachable" for h in self.hosts):
            return EXIT_INFRA
        return EXIT_OK

    def to_dict(self) -> dict:
        """What `fleet deploy --json` prints and runs/<id>/deploy.json holds."""
        return {
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "status": self.status,
            "rc": self.rc,
            "seconds": round(self.seconds, 2),
            "exit_code": self.exit_code,
            "notes": self.notes,
            "hosts": [h.to_dict() for h in self.hosts],
        }


def new_run_dir(runs_dir: Path) -> tuple[str, Path]:
    """Make ``runs/deploy-<time>-<rand>/`` and return (run id, folder)."""
    run_id = f"deploy-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    d = Path(runs_dir) / run_id
    d.mkdir(parents=True)
    return run_id, d


def rotate_runs(runs_dir: Path, keep: int = KEEP_RUNS) -> list[Path]:
    """Delete all but the newest ``keep`` deploy run folders (only ``deploy-*``; other runs stay)."""
    runs = sorted((p for p in Path(runs_dir).glob("deploy-*") if p.is_dir()), key=lambda p: p.name)
    old = runs[:-keep] if keep > 0 else runs
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


def deploy(
    inventory: Path,
    *,
    limit: str | None = None,
    artifacts_dir: Path | None = None,
    data_root: Path | None = None,
    datasets: tuple[str, ...] | None = None,
    runs_dir: Path | None = None,
    models: tuple[str, ...] | None = None,
    console: Console | None = None,
) -> DeployResult:
    """Provision the inventory's boards: base, agent, models, datasets roles.

    Args:
        inventory: Ansible inventory file or folder; None = ``$FLEET_INVENTORY``, else inventory/sim.yml.
        limit: Ansible host pattern (``--limit``), resolved by Ansible (fleet.inventory.load_inventory).
        artifacts_dir: folder with manifest.json (default ``artifacts/``).
        data_root: where the data sets are read from (default ``fleet.paths.data_root()``:
            ``$FLEET_DATA``, else ``../shared/data`` beside the checkout).
        datasets: data sets every board gets, ``NAME`` or ``NAME:SELECTION`` each (default: the
            catalog's ``deploy: true`` data sets; ``()`` for none).
        runs_dir: where run folders go (default ``runs/``); the newest 10 deploy runs are kept.
        models: models every board gets (default: every model in the manifest).
        console: progress output (rich), None for none.

    Before anything is copied (fleet.deploy.preflight): the Python of each board whose inventory
    has no ``fleet_python_version`` is gathered from it (playbooks/probe.yml, one ``raw`` task;
    a board that does not answer is reported unreachable and gets nothing), and a board whose
    (platform, Python) cannot install the agent (a pinned dependency without a wheel, or outside
    requires-python) is ``refused``: no task runs on it, its reason names the package, the board's
    Python and what would work, and the exit code is 1. The other boards are deployed, as a play
    goes on past a failed host.

    Raises:
        FleetError: bad inventory, missing/corrupt artifacts (nothing deployed), wheelhouse build
            failure (other than a missing wheel), or Ansible failing before any host ran (exit code 3).
    """
    t0 = time.monotonic()
    inventory = Path(default_inventory(inventory)).resolve()
    boards = load_inventory(inventory, limit)
    project = paths.project_root()
    runs_dir = Path(runs_dir or paths.runs_dir()).resolve()
    run_id, run_dir = new_run_dir(runs_dir)
    rotate_runs(runs_dir)
    pdd = run_dir / "ansible"
    pdd.mkdir()
    env = ansible_env()
    env["ANSIBLE_CONFIG"] = str(PLAYBOOKS / "ansible.cfg")
    env["ANSIBLE_ROLES_PATH"] = str(PLAYBOOKS / "roles")
    # ansible-runner starts from a copy of os.environ anyway: hand it only what differs, so its
    # env/envvars file (written into the run folder) holds no copy of the user's environment.
    envvars = {k: v for k, v in env.items() if os.environ.get(k) != v}
    early: dict[str, HostResult] = {}  # hosts that get no play: not gathered, or refused
    machines: dict[str, str] = {}

    def gather(planned: list) -> list:
        """Boards with no fleet_python_version: ask them (playbooks/probe.yml, one raw task)."""
        unknown = [b.name for b in planned if not b.python_version]
        if not unknown:
            return planned
        handler, probes = preflight.probe_events(unknown)
        _ansible(pdd, project, inventory, preflight.PROBE_PLAYBOOK, "probe", unknown, {}, envvars, handler)
        out = []
        for b in planned:
            p = probes.get(b.name)
            if p is None:
                out.append(b)
            elif p.status == "ok":
                machines[b.name] = p.machine
                out.append(replace(b, python_version=p.python_version))
                if console is not None:
                    console.print(f"{b.name}: Python {p.python_version} on {p.machine} (gathered from the board)",
                                  highlight=False)
            else:
                early[b.name] = HostResult(b.name, status=p.status, failed=int(p.status == "failed"),
                                           unreachable=p.status == "unreachable", reason=p.reason)
        return out

    plan = make_plan(
        boards,
        project=project,
        wheel_cache=paths.state_dir() / "wheelhouse",
        artifacts_dir=Path(artifacts_dir or paths.artifacts_dir()),
        data_root=data_root,
        datasets=datasets,
        bundle_cache=paths.state_dir() / "bundles",
        models=models,
        gather=gather,
    )
    for host, no in plan.refused.items():
        early[host] = HostResult(host, status="refused", reason=no.reason(host, machines.get(host, "")))
    if console is not None:
        for wh in plan.wheelhouses:
            how = f"built in {wh.seconds:.1f} s" if wh.rebuilt else "cached"
            console.print(f"wheelhouse {wh.platform or 'controller platform'}: {wh.path} ({how})", highlight=False)
        for note in plan.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        for host, r in sorted(early.items()):
            console.print(f"[red]{r.status}[/] {host}: {r.reason}", highlight=False, soft_wrap=True)
    targets = [b.name for b in plan.boards if b.name in plan.hosts]
    collector = EventCollector(targets, console)
    runner = None
    if targets:
        runner = _ansible(pdd, project, inventory, PLAYBOOKS / "site.yml", "site", targets,
                          {"fleet_plan_by_host": {h: p.to_vars() for h, p in plan.hosts.items()}}, envvars, collector)
    hosts = sorted(collector.finish() + list(early.values()), key=lambda h: h.host)
    status, rc = (runner.status, int(runner.rc or 0)) if runner is not None else ("not run", 0)
    result = DeployResult(run_id, str(run_dir), status, rc, time.monotonic() - t0, hosts, plan.notes)
    (run_dir / "deploy.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if runner is not None and not collector.stats_seen:
        tail = _stdout_tail(runner)
        raise FleetError(
            f"ansible-playbook stopped before any host ran (status {runner.status}, rc {runner.rc}): {tail}",
            f"see {pdd}/artifacts/site/stdout",
            exit_code=EXIT_INFRA,
        )
    return result


def _ansible(pdd: Path, project: Path, inventory: Path, playbook: Path, ident: str, hosts: list[str],
             extravars: dict, envvars: dict, handler):
    """Run one playbook on ``hosts`` through ansible-runner (events to ``handler``); the run
    folder is scrubbed of environment values afterwards (scrub_run_dir)."""
    import ansible_runner  # heavy: only when deploying

    try:
        return ansible_runner.run(
            private_data_dir=str(pdd),
            project_dir=str(project),  # Ansible's cwd: relative inventory paths mean the checkout
            playbook=str(playbook),
            inventory=str(inventory),
            limit=",".join(hosts),
            extravars=extravars,
            envvars=envvars,
            event_handler=handler,
            quiet=True,
            ident=ident,
        )
    finally:
        scrub_run_dir(pdd)


def scrub_run_dir(pdd: Path) -> None:
    """Remove environment values from ansible-runner's private data dir after a run.

    ansible-runner writes ``env/envvars`` (the variables it was given) and
    ``artifacts/<ident>/command`` (the ansible-playbook argv, cwd and the *whole* process
    environment, tokens and all). The run folder is kept for debugging and may be attached to CI
    artifacts, so: ``env/envvars`` is deleted, and each ``command`` file keeps its argv and cwd
    but only the *names* of the environment variables (``env_names``), never their values.
    """
    pdd = Path(pdd)
    for name in ("envvars", "ssh_key", "passwords"):
        try:
            (pdd / "env" / name).unlink()
        except FileNotFoundError:
            pass
    for cmd_file in pdd.glob("artifacts/*/command"):
        try:
            data = json.loads(cmd_file.read_text())
        except (OSError, ValueError):
            cmd_file.unlink(missing_ok=True)  # unreadable: do not keep what may hold secrets
            continue
        env = data.pop("env", None)
        if isinstance(env, dict):
            data["env_names"] = sorted(env)
        cmd_file.write_text(json.dumps(data))


def _stdout_tail(runner, lines: int = 6) -> str:
    try:
        text = runner.stdout.read()
    except Exception:  # noqa: BLE001 - best effort for an error message
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
