"""Fan-out at scale: `fleet test` over 1, 8 and 24 emulated boards, against `ansible all -m ping`.

    .venv/bin/python benchmarks/fleet_scale.py [--sizes 1,8,24] [--repeat 3] [--requests 200]
        [--real-deploy-sizes 1] [--per-board-repeat 1] [--skip-real]
        [--json benchmarks/results/fleet_scale.json] [--markdown OUT] [--keep]

(about 15 min at 1, 8, 24 boards on 2 busy CPUs; as root for network namespaces.)

For each size N (boards: half Pi 5 + Hailo-8L, half RK3588, as `fleet sim up --boards N` makes them;
every board a real sshd in its own network namespace when run as root):

1. bring the boards up in a private tmp state dir (lifecycle.up, what `fleet sim up` runs);
2. deploy them: with the real `fleet deploy` (Ansible over SSH, `--models whisper-tiny.en`) for
   the sizes in --real-deploy-sizes, timed; the other boards get the fast local layout
   (fleet/deploy/local.py lay_out_board: the same model selection and board manifest, symlinked,
   plus the speech set), and their ``venv`` is a symlink to the venv a real deploy made (or, if no
   size is deployed for real, one venv installed from the deploy's wheelhouse exactly as the
   agent role does). A board root is a local folder on emulated boards, so this gives each board
   a working agent without N pip installs;
3. run the trivial suite (benchmarks/suites/fleet_trivial, ``-k info``: 50 `info` requests per
   board) through the real `fleet test` (subprocess, --inventory, its own results store),
   --repeat times, wall time each, plus --per-board-repeat runs with ``-n N`` (a worker per
   board, what ``-n auto`` was before fleet.runner.cli.auto_workers capped it for emulated
   fleets); CPU seconds of fleet test's process tree (controller) and of the boards' agents
   (sampled from /proc) for each run; then the short real one once (``-k whisper``: Whisper
   tiny.en load + 3 clips per board);
4. `ansible all -m ping -i INVENTORY` on the same inventory, --repeat times, each with a fresh
   SSH ControlPath dir so every run pays its SSH handshakes like `fleet test` does (Ansible
   settings: playbooks/ansible.cfg, the ones `fleet deploy` uses: forks 25, pipelining);
5. per-request overhead on the first board: --requests `info` round trips over one AgentSession
   (fleet/remote/session.py: JSON line written -> reply parsed, ``rtt_ms``), interleaved one by one
   with the same request handled in this process by device_agent's Agent on the same fleet_root
   (``Agent.handle_line``: decode, handle, encode). Overhead per request = rtt - median in-process
   time, reported p50/p99; ``rtt - handle_ms`` (the agent's own timing) is the transport alone.
   The same for `telemetry` (a smaller reply), and again with TCP_NODELAY set on the session's
   socket; then what a session costs before its first reply (SSH open, first `info`).

Goals (issue 8 §5, on this machine): per-request overhead p50 <= 20 ms; the trivial suite's wall
time at 24 boards <= 3x one board's. The machine is shared (load average recorded in the JSON),
so ratios within one run are what carry over, not absolute times; and since its speed drifts over
the minutes between sizes, each size N > 1 also runs the trivial suite on one of its boards
(``--limit FIRST``) right before each of its N-board runs, and the goal is judged on that paired
ratio (the ratio against the first size is reported too).

Boards are always taken down (try/finally, Ctrl-C and SIGTERM included); agents left behind by an
interrupted `fleet test` are killed by pid (found by their --root inside this run's tmp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUITE = REPO / "benchmarks" / "suites" / "fleet_trivial"
MODEL = "whisper-tiny.en"
GOAL_OVERHEAD_MS = 20.0  # issue 8 §5
GOAL_RATIO = 3.0  # issue 8 §5: 24 boards' trivial-suite wall time <= 3x one board's


def pct(values: list[float], q: float) -> float:
    """Percentile ``q`` (0-100, linear interpolation, numpy's default) of ``values``."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


# -- processes ------------------------------------------------------------------------------
def run_timed(cmd: list[str], env: dict, log: Path, timeout_s: float) -> tuple[int, float]:
    """Run ``cmd`` with output to ``log``; returns (exit status, wall s).

    On Ctrl-C / SIGTERM the child gets SIGINT (so `fleet test` marks its run interrupted and stops
    pytest and the agents), then SIGTERM, then SIGKILL; KeyboardInterrupt is re-raised.
    """
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout_s)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            for sig, wait_s in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                if proc.poll() is not None:
                    break
                proc.send_signal(sig)
                try:
                    proc.wait(wait_s)
                except subprocess.TimeoutExpired:
                    continue
            raise
        return rc, time.perf_counter() - t0


def agent_pids_under(prefix: str) -> list[int]:
    """Pids of ``fleet-agent --root ROOT serve`` processes whose ROOT is inside ``prefix``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if "serve" in argv and "--root" in argv and any(a.endswith("fleet-agent") for a in argv):
            i = argv.index("--root")
            if i + 1 < len(argv) and argv[i + 1].startswith(prefix):
                out.append(int(d.name))
    return out


class AgentCpu:
    """CPU seconds used by this run's agents (``fleet-agent --root ROOT serve`` with ROOT inside
    ``prefix``), sampled from /proc/PID/stat (utime + stime) every ``period_s`` while the context
    is open; each agent counts with its last sample, so up to ``period_s`` of an agent's last
    moments is missed. On emulated boards this is board-side work done on the controller's CPUs.
    (The boards' sshds cannot give it: an agent may outlive its session process and be reaped by
    init, so the sshd's children time misses it.)"""

    def __init__(self, prefix: str, period_s: float = 0.1):
        import threading

        self.prefix, self.period_s = prefix, period_s
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        for pid in agent_pids_under(self.prefix):
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[pid] = (int(f[11]) + int(f[12])) / self._tick  # utime, stime (stat fields 14, 15)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def controller_cpu_s() -> float:
    """CPU seconds of this process's waited-for children and their descendants (RUSAGE_CHILDREN)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _sigterm(signum, frame):
    raise KeyboardInterrupt


# -- bring-up -------------------------------------------------------------------------------
def template_venv(work: Path, roots: list[Path]) -> Path:
    """A venv holding the agent: a really deployed board's (``venv/.fleet-wheelhouse-*`` marks a
    complete agent install), else one installed here from the deploy's wheelhouse with the same
    two pip commands as playbooks/roles/agent."""
    for r in roots:
        if (r / "venv" / "bin" / "fleet-agent").exists() and not (r / "venv").is_symlink() \
                and list((r / "venv").glob(".fleet-wheelhouse-*")):
            return r / "venv"
    venv = work / "venv-template"
    if (venv / "bin" / "fleet-agent").exists():
        return venv
    from fleet import paths
    from fleet.deploy.wheelhouse import ensure_wheelhouse

    wh = ensure_wheelhouse(paths.project_root(), paths.state_dir() / "wheelhouse")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-index"]
    subprocess.run(pip + ["--find-links", str(wh.path), str(wh.path / wh.fleet_wheel)], check=True)
    return venv


def lay_out_fast(boards, artifacts: Path, work: Path) -> float:
    """Fast local layout for every board without a deployed agent; returns seconds spent."""
    from fleet.datasets.local import require
    from fleet.deploy.local import lay_out_board

    t0 = time.perf_counter()
    speech = require("speech")
    roots = [Path(b.fleet_root) for b in boards]
    venv = None
    for b in boards:
        root = Path(b.fleet_root)
        if (root / "venv" / "bin" / "fleet-agent").exists():
            continue  # deployed for real at an earlier size (board roots survive `down`)
        if venv is None:
            tv = time.perf_counter()
            venv = template_venv(work, roots)
            print(f"  agent venv for the local layout: {venv} ({time.perf_counter() - tv:.1f} s)", flush=True)
        lay_out_board(root, artifacts, board=b.board, accelerator=b.accelerator, emulated=True,
                      models=(MODEL,), data={"speech": speech})
        if (root / "venv").is_symlink() or not (root / "venv").exists():
            if (root / "venv").is_symlink():
                (root / "venv").unlink()
            os.symlink(venv, root / "venv")
    return time.perf_counter() - t0


# -- measurements ---------------------------------------------------------------------------
def fleet_test(work: Path, inventory: Path, keyword: str, tag: str, env: dict, db: Path,
               workers: int | None = None, limit: str | None = None) -> dict:
    """One `fleet test benchmarks/suites/fleet_trivial -k KEYWORD` (``-n workers`` if given, else
    the runner's auto; ``--limit`` if given): wall s, exit status, CPU s on the controller side
    (fleet test, pytest and its workers) and of the boards' agents (AgentCpu), and the per-board
    metrics it stored."""
    from fleet.results.store import Store

    cmd = [sys.executable, "-m", "fleet.cli", "test", str(SUITE), "--inventory", str(inventory),
           "--db", str(db), "-k", keyword] + (["-n", str(workers)] if workers else []) \
        + (["--limit", limit] if limit else [])
    log = work / f"{tag}.log"
    c0 = controller_cpu_s()
    with AgentCpu(str(work)) as agents:
        rc, wall = run_timed(cmd, env, log, timeout_s=1800)
    cpu = {"controller_s": round(controller_cpu_s() - c0, 2), "agents_s": round(agents.seconds, 2),
           "agents": len(agents.seen)}
    s = Store(db)
    try:
        run_id = s.latest_run()
        results = s.results(run_id)
    finally:
        s.close()
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    metrics: dict[str, list[float]] = {}
    for r in results:
        for m in r.metrics:
            metrics.setdefault(m.name, []).append(m.value)
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        print(f"  fleet test -k {keyword} exited {rc} (log {log}):\n{tail}", file=sys.stderr)
    return {"wall_s": round(wall, 3), "rc": rc, "run_id": run_id, "workers": workers or "auto", "cpu": cpu,
            "outcomes": outcomes,
            "metrics": {k: [round(v, 3) for v in vs] for k, vs in metrics.items()}}


def ansible_ping(work: Path, inventory: Path, tag: str) -> dict:
    """`ansible all -m ping -i INVENTORY` with playbooks/ansible.cfg and a fresh ControlPath dir."""
    cp = Path(tempfile.mkdtemp(prefix="cp-", dir=work))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "playbooks" / "ansible.cfg"),
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp), ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"))
    ansible = Path(sys.executable).parent / "ansible"
    rc, wall = run_timed([str(ansible), "all", "-m", "ping", "-i", str(inventory)], env, work / f"{tag}.log", 600)
    if rc != 0:
        print(f"  ansible ping exited {rc} (log {work / f'{tag}.log'})", file=sys.stderr)
    return {"wall_s": round(wall, 3), "rc": rc}


def overhead(board, requests: int, nodelay: bool = False) -> dict:
    """Per-request overhead, controller -> agent over SSH vs the same call in this process.

    Args:
        nodelay: set TCP_NODELAY on the session's socket (paramiko leaves Nagle's algorithm on:
            a request written while an earlier segment is unacknowledged waits for the board's
            delayed ACK, up to 40 ms on Linux), to show what that costs.

    Returns per op (info, telemetry): ``inproc`` ms p50/p99 (Agent.handle_line in this process),
    ``rtt`` ms p50/p99 (AgentSession round trip), ``overhead`` ms p50/p99 (rtt - in-process
    median), ``transport`` ms p50/p99 (rtt - the agent's handle_ms), reply bytes.
    """
    import socket

    from device_agent.agent import Agent
    from device_agent.config import load_config
    from fleet.remote.session import AgentSession

    agent = Agent(load_config(board.fleet_root))
    out: dict = {"tcp_nodelay": nodelay}
    with AgentSession(board, request_timeout_s=60) as sess:
        if nodelay:
            sess._conn.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for op in ("info", "telemetry"):
            line = (json.dumps({"id": 1, "op": op, "args": {}}) + "\n").encode()
            for _ in range(5):  # warm-up: the first info collects the stack fingerprint
                sess.request(op)
                agent.handle_line(line)
            rtt, inproc, transport = [], [], []
            nbytes = 0
            for _ in range(requests):  # interleaved, so load on the machine hits both alike
                rep = sess.request(op)
                rtt.append(rep.rtt_ms)
                transport.append(rep.rtt_ms - rep.timings.get("handle_ms", 0.0))
                t0 = time.perf_counter()
                data, _ = agent.handle_line(line)
                inproc.append((time.perf_counter() - t0) * 1e3)
                nbytes = len(data)
            base = statistics.median(inproc)
            over = [r - base for r in rtt]
            out[op] = {"requests": requests, "reply_bytes": nbytes,
                       **{f"{k}_{q}_ms": round(pct(v, int(q[1:])), 3)
                          for k, v in (("inproc", inproc), ("rtt", rtt), ("overhead", over), ("transport", transport))
                          for q in ("p50", "p99")}}
    agent.close()
    return out


def session_start(board, opens: int = 3) -> dict:
    """What a board costs before its first request: SSH connect + auth (``open_ms``: paramiko
    handshake, session channel, exec), then the first `info` (``first_info_ms``: the board's shell
    start-up, the agent's Python start-up and imports, its stack fingerprint), medians of ``opens``
    fresh sessions opened one after another."""
    from fleet.remote.session import AgentSession

    opened, first = [], []
    for _ in range(opens):
        t0 = time.perf_counter()
        s = AgentSession(board, request_timeout_s=60).open()
        t1 = time.perf_counter()
        try:
            s.request("info")
            first.append((time.perf_counter() - t1) * 1e3)
        finally:
            s.close()
        opened.append((t1 - t0) * 1e3)
    return {"opens": opens, "open_ms": round(statistics.median(opened), 1),
            "first_info_ms": round(statistics.median(first), 1)}


def one_size(n: int, args, work: Path, env: dict) -> dict:
    """Everything for one fleet size; the boards are down again when it returns or raises."""
    from fleet.inventory import load_inventory
    from fleet.sim import lifecycle

    state_dir, inv = work / "sim", work / f"inventory-{n}" / "sim.yml"
    row: dict = {"boards": n, "load_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    try:
        lifecycle.up(state_dir, inv, boards=n, use_netns=os.geteuid() == 0, timeout=60)
        row["sim_up_s"] = round(time.perf_counter() - t0, 2)
        boards = load_inventory(inv)
        if n in args.real_deploy_sizes:
            cmd = [sys.executable, "-m", "fleet.cli", "deploy", "--inventory", str(inv), "--models", MODEL,
                   "--runs-dir", str(work / "deploy-runs"), "--artifacts", str(args.artifacts)]
            # the project's own FLEET_HOME: the wheelhouse is built from (and cached in) the checkout
            denv = {k: v for k, v in env.items() if k != "FLEET_HOME"}
            rc, wall = run_timed(cmd, denv, work / f"deploy-{n}.log", timeout_s=3600)
            if rc != 0:
                raise SystemExit(f"fleet deploy exited {rc}: see {work / f'deploy-{n}.log'}")
            row["deploy"] = {"how": "fleet deploy (Ansible)", "s": round(wall, 2)}
        fast_s = lay_out_fast(boards, args.artifacts, work)
        if "deploy" not in row:
            row["deploy"] = {"how": "local layout (lay_out_board + shared agent venv)", "s": round(fast_s, 2)}
        print(f"[{n} boards] up in {row['sim_up_s']} s, {row['deploy']['how']} {row['deploy']['s']} s", flush=True)

        from fleet.runner.cli import auto_workers

        row["auto_workers"] = auto_workers(boards)
        row["trivial"], row["ping"], row["trivial_per_board"], row["trivial_one"] = [], [], [], []
        for i in range(args.repeat):  # fleet test and ping alternate, so drifting load hits both
            if n > 1:  # the one-board baseline right before, on this fleet (--limit its first board)
                row["trivial_one"].append(fleet_test(work, inv, "info", f"trivial-{n}-one-{i}", env, args.db,
                                                     limit=boards[0].name))
                print(f"[{n} boards] trivial suite on 1 of them (--limit {boards[0].name}): "
                      f"{row['trivial_one'][-1]['wall_s']:.2f} s", flush=True)
            row["trivial"].append(fleet_test(work, inv, "info", f"trivial-{n}-{i}", env, args.db))
            row["ping"].append(ansible_ping(work, inv, f"ping-{n}-{i}"))
            t = row["trivial"][-1]
            print(f"[{n} boards] trivial suite {t['wall_s']:.2f} s with -n auto = {row['auto_workers']} (rc {t['rc']}; "
                  f"CPU s controller {t['cpu']['controller_s']}, agents {t['cpu']['agents_s']}), "
                  f"ansible ping {row['ping'][-1]['wall_s']:.2f} s", flush=True)
            if n > row["auto_workers"] and i < args.per_board_repeat:  # before the fix: a worker per board
                row["trivial_per_board"].append(fleet_test(work, inv, "info", f"trivial-{n}-n{n}-{i}", env, args.db, n))
                print(f"[{n} boards] trivial suite with -n {n} (a worker per board): "
                      f"{row['trivial_per_board'][-1]['wall_s']:.2f} s", flush=True)
        if not args.skip_real:
            row["real"] = fleet_test(work, inv, "whisper", f"real-{n}", env, args.db)
            print(f"[{n} boards] short real suite {row['real']['wall_s']:.2f} s (rc {row['real']['rc']})", flush=True)
        row["overhead"] = overhead(boards[0], args.requests)
        row["overhead_nodelay"] = overhead(boards[0], args.requests, nodelay=True)
        row["session_start"] = session_start(boards[0])
        print(f"[{n} boards] session start: SSH open {row['session_start']['open_ms']} ms, "
              f"first info {row['session_start']['first_info_ms']} ms", flush=True)
        for key in ("overhead", "overhead_nodelay"):
            o = row[key]["info"]
            print(f"[{n} boards] {key}: info rtt p50 {o['rtt_p50_ms']:.2f} ms, in-process {o['inproc_p50_ms']:.2f} ms, "
                  f"overhead p50 {o['overhead_p50_ms']:.2f} / p99 {o['overhead_p99_ms']:.2f} ms", flush=True)
    finally:
        for pid in agent_pids_under(str(work)):  # left by an interrupted run: ours, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        lifecycle.down(state_dir)
    row["load_end"] = [round(x, 2) for x in os.getloadavg()]
    ok = [t["wall_s"] for t in row["trivial"] if t["rc"] == 0]
    row["trivial_wall_s"] = round(statistics.median(ok), 3) if ok else None
    pings = [p["wall_s"] for p in row["ping"] if p["rc"] == 0]
    row["ping_wall_s"] = round(statistics.median(pings), 3) if pings else None
    for part in ("controller_s", "agents_s"):
        vals = [t["cpu"][part] for t in row["trivial"] if t["rc"] == 0]
        row[f"trivial_cpu_{part}"] = round(statistics.median(vals), 2) if vals else None
    one = [t["wall_s"] for t in row.get("trivial_one", []) if t["rc"] == 0]
    row["trivial_one_wall_s"] = round(statistics.median(one), 3) if one else None
    per = [t["wall_s"] for t in row.get("trivial_per_board", []) if t["rc"] == 0]
    row["trivial_per_board_wall_s"] = round(statistics.median(per), 3) if per else None
    rtt50 = row["trivial"][0]["metrics"].get("info_rtt_p50_ms", []) if row["trivial"] else []
    rtt99 = row["trivial"][0]["metrics"].get("info_rtt_p99_ms", []) if row["trivial"] else []
    row["suite_info_rtt_p50_ms_median"] = round(statistics.median(rtt50), 2) if rtt50 else None
    row["suite_info_rtt_p99_ms_max"] = round(max(rtt99), 2) if rtt99 else None
    return row


# -- report ---------------------------------------------------------------------------------
def summarise(rows: list[dict]) -> dict:
    """Ratios against the smallest size, and the goals' verdicts."""
    base = rows[0]

    def ratio(a, b):
        return round(a / b, 2) if a and b else None

    for r in rows:
        r["trivial_ratio"] = ratio(r.get("trivial_wall_s"), base.get("trivial_wall_s"))
        # against the one-board runs interleaved with this size's (same sim, same minutes): the
        # machine is shared, and its speed drifts between sizes run minutes apart
        r["trivial_paired_ratio"] = ratio(r.get("trivial_wall_s"), r.get("trivial_one_wall_s"))
        r["trivial_per_board_ratio"] = ratio(r.get("trivial_per_board_wall_s"), base.get("trivial_wall_s"))
        r["ping_ratio"] = ratio(r.get("ping_wall_s"), base.get("ping_wall_s"))
        r["real_ratio"] = ratio((r.get("real") or {}).get("wall_s"), (base.get("real") or {}).get("wall_s"))
    verdicts = []
    o = [r["overhead"]["info"]["overhead_p50_ms"] for r in rows if "overhead" in r]
    if o:
        worst = max(o)
        verdicts.append({"goal": f"per-request overhead p50 <= {GOAL_OVERHEAD_MS:g} ms (info, worst size)",
                         "measured_ms": worst, "pass": worst <= GOAL_OVERHEAD_MS})
    big = max(rows, key=lambda r: r["boards"])
    if big is not base and big.get("trivial_paired_ratio") is not None:
        verdicts.append({"goal": f"trivial suite {big['boards']} boards <= {GOAL_RATIO:g}x 1 board "
                                 "(paired: one-board runs interleaved on the same fleet)",
                         "measured_ratio": big["trivial_paired_ratio"],
                         "pass": big["trivial_paired_ratio"] <= GOAL_RATIO})
    if big is not base and big.get("trivial_ratio") is not None:
        verdicts.append({"goal": f"trivial suite {big['boards']} boards <= {GOAL_RATIO:g}x {base['boards']} board(s) "
                                 "(against the first size, run minutes earlier)",
                         "measured_ratio": big["trivial_ratio"], "pass": big["trivial_ratio"] <= GOAL_RATIO})
    return {"verdicts": verdicts}


def markdown(rows: list[dict]) -> str:
    """The README table (wall times are medians of --repeat runs; ratios against the first size)."""
    def f(x, fmt="{:.1f}"):
        return "–" if x is None else fmt.format(x)

    head = ("| boards | deploy s | trivial suite s (-n auto) | × 1 board | paired 1 board s (×) "
            "| trivial, a worker per board s (×) "
            "| `ansible all -m ping` s | × 1 board | short real suite s (×) "
            "| info rtt p50 / p99 ms | in-process info ms | overhead p50 / p99 ms | same, TCP_NODELAY "
            "| SSH open + first info ms | trivial CPU s: controller / agents | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        o, nd = r.get("overhead", {}).get("info", {}), r.get("overhead_nodelay", {}).get("info", {})
        real = r.get("real") or {}
        per = (f"{f(r.get('trivial_per_board_wall_s'))} ({f(r.get('trivial_per_board_ratio'), '{:.2f}')}×)"
               if r.get("trivial_per_board_wall_s") else "–")
        lines.append(
            f"| {r['boards']} | {r['deploy']['how'].split(' (')[0]} {r['deploy']['s']:.1f} "
            f"| {f(r.get('trivial_wall_s'))} ({r.get('auto_workers')} workers) | {f(r.get('trivial_ratio'), '{:.2f}')}× "
            f"| {f(r.get('trivial_one_wall_s'))} (**{f(r.get('trivial_paired_ratio'), '{:.2f}')}×**) "
            f"| {per} | {f(r.get('ping_wall_s'))} | {f(r.get('ping_ratio'), '{:.2f}')}× "
            f"| {f(real.get('wall_s'))} ({f(r.get('real_ratio'), '{:.2f}')}×) "
            f"| {f(o.get('rtt_p50_ms'))} / {f(o.get('rtt_p99_ms'))} | {f(o.get('inproc_p50_ms'))} "
            f"| **{f(o.get('overhead_p50_ms'))}** / {f(o.get('overhead_p99_ms'))} "
            f"| {f(nd.get('overhead_p50_ms'))} / {f(nd.get('overhead_p99_ms'))} "
            f"| {f(r.get('session_start', {}).get('open_ms'), '{:.0f}')} + "
            f"{f(r.get('session_start', {}).get('first_info_ms'), '{:.0f}')} "
            f"| {f(r.get('trivial_cpu_controller_s'))} / {f(r.get('trivial_cpu_agents_s'))} "
            f"| {r['load_start'][0]:.1f}→{r['load_end'][0]:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,8,24", help="fleet sizes, comma-separated (default 1,8,24)")
    ap.add_argument("--repeat", type=int, default=3, help="trivial-suite and ping runs per size (median)")
    ap.add_argument("--requests", type=int, default=200, help="info/telemetry requests for the overhead")
    ap.add_argument("--real-deploy-sizes", default="1",
                    help="sizes deployed with the real `fleet deploy` (comma-separated; '' = none)")
    ap.add_argument("--per-board-repeat", type=int, default=1,
                    help="runs with -n N (a worker per board, the runner's old auto) per size, for comparison")
    ap.add_argument("--skip-real", action="store_true", help="leave out the short real (whisper) suite")
    ap.add_argument("--artifacts", type=Path, default=Path(os.environ.get("FLEET_ARTIFACTS", REPO / "artifacts")))
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "fleet_scale.json")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument("--keep", action="store_true", help="keep the tmp folder (logs, board roots)")
    args = ap.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        args.real_deploy_sizes = {int(s) for s in args.real_deploy_sizes.split(",") if s.strip()}
    except ValueError:
        print("--sizes / --real-deploy-sizes: comma-separated whole numbers, e.g. 1,8,24", file=sys.stderr)
        return 2
    if not args.sizes or min(args.sizes) < 1:
        print("--sizes: at least one size, each >= 1", file=sys.stderr)
        return 2
    if not (args.artifacts / "manifest.json").is_file():
        print(f"no {args.artifacts / 'manifest.json'}: run `fleet models build {MODEL}` first", file=sys.stderr)
        return 2
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        print("no sshd: apt-get install openssh-server (the emulated boards are real sshds)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    work = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    args.db = work / "results.db"
    env = dict(os.environ, FLEET_HOME=str(work / "home"), FLEET_ARTIFACTS=str(args.artifacts),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    (work / "home").mkdir()
    meta = {"argv": sys.argv, "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "load_start": [round(x, 2) for x in os.getloadavg()], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "netns": os.geteuid() == 0, "work": str(work)}
    rows: list[dict] = []
    keep = args.keep
    try:
        for n in sorted(args.sizes):
            rows.append(one_size(n, args, work, env))
    except KeyboardInterrupt:
        print("interrupted: boards taken down", file=sys.stderr)
        return 130
    except BaseException:
        keep = True  # the logs say why
        print(f"failed: boards taken down; logs kept in {work}", file=sys.stderr)
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarise(rows)
    md = markdown(rows)
    print()
    print(md)
    print()
    for v in summary["verdicts"]:
        print(("PASS" if v["pass"] else "MISS") + f": {v['goal']}: "
              + (f"{v['measured_ms']:.2f} ms" if "measured_ms" in v else f"{v['measured_ratio']:.2f}x"))
    print(f"load average {meta['load_start'][0]:.1f} at start, {meta['load_end'][0]:.1f} at the end; {os.cpu_count()} CPUs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "sizes": rows, **summary}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(md + "\n")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
