"""The fleet pytest plugin: boards as parameters, one agent session per board, results to the store.

Loaded by ``fleet test`` with ``-p fleet.runner.plugin``. It

* parametrizes every test that takes the ``board`` fixture over the boards the suite matches, and
  puts each board's tests in one pytest-xdist group (``--dist loadgroup``): a board is an
  exclusive resource, so its tests run on one worker, one at a time, while boards run in parallel;
* gives tests an ``agent`` (the board's long-lived :class:`AgentSession`), the ``suite`` and its
  ``thresholds`` for the board's class, and a ``record`` object for metrics and per-item outputs;
* writes each result to the results store the moment it is known: ``passed``, ``failed``, or
  ``error`` for infrastructure problems (unreachable board, board lost, agent hung), which are
  never counted as test failures;
* checks each board's stack fingerprint (``info.stack``, judged by ``fleet.doctor.checks``) when
  its session opens: a board that fails a check is refused (:class:`FingerprintRefused`, so its
  tests are ``error`` with the mismatches and their fixes) unless ``--fleet-ignore-fingerprint``
  is given; then the tests run and the board's stored info carries
  ``doctor: {"status": "fail", "ignored": true, ...}`` (``fleet results`` labels the run);
* keeps a lost board from stalling the run: when a board's session dies (agent killed, agent hung
  past the request timeout, link down) the next test reconnects once and starts a new agent; if
  that fails the board is *lost* and its remaining tests are ``error`` "board lost: ..." at once;
* records the tests of boards another run has leased (``--fleet-not-run``) as ``not-run`` with the
  holder, and leaves out (board, test) pairs a resumed run already finished (``--fleet-done``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet.inventory import Board
from fleet.remote.session import (
    AgentSession,
    BoardLost,
    BoardUnreachable,
    InfrastructureError,
)
from fleet.results.store import Metric, Result, Store
from fleet.runner.suite import Suite, load_suite

_rec_key = pytest.StashKey["Recorder"]()
_done_key = pytest.StashKey[bool]()


def pytest_addoption(parser):
    g = parser.getgroup("fleet")
    g.addoption("--fleet-run", help="run id in the results store")
    g.addoption("--fleet-boards", help="JSON file with the boards to test (written by `fleet test`)")
    g.addoption("--fleet-db", help="results store: SQLite path or SQLAlchemy URL; '-' = the URL in $FLEET_DB "
                "(how `fleet test` passes a server URL, so a password never shows on a command line)")
    g.addoption("--fleet-suite", help="suite folder (holds suite.yml)")
    g.addoption("--fleet-ignore-fingerprint", action="store_true", default=False,
                help="run on boards whose stack fingerprint fails `fleet doctor` (the run is labelled)")
    g.addoption("--fleet-not-run", help="JSON file {board: reason}: boards whose tests are recorded not-run")
    g.addoption("--fleet-done", help="JSON file [[board, test], ...]: pairs a resumed run already finished")


class FingerprintRefused(InfrastructureError):
    """The board's stack fingerprint fails a check (version mismatch, wrong HEF arch, ...): its
    tests are not run and are recorded as ``error`` (infrastructure) with the reasons and fixes."""


@dataclass
class Recorder:
    """What a test reports besides pass/fail: metrics, per-item outputs, backends, models.

    Use ``record.metric("wer", 0.08, "ratio", "lower")``; ``record.output({...})`` per item;
    ``record.trace(label, result["telemetry"])`` per measured request (trace + summary), and
    ``record.telemetry_summary = {"summary": merged, "measurement": {...}}`` for the aggregate.
    """

    metrics: list[Metric] = field(default_factory=list)
    outputs: list = field(default_factory=list)
    backends: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    emulated: bool | None = None
    telemetry: list = field(default_factory=list)
    telemetry_summary: dict | None = None

    def trace(self, label: str, telemetry: dict | None) -> None:
        """Keep one request's telemetry ({trace, summary} from the agent) for the store."""
        if telemetry:
            self.telemetry.append({"label": label, "summary": telemetry.get("summary"),
                                   "trace": telemetry.get("trace")})

    def metric(self, name: str, value: float, unit: str = "", direction: str = "lower") -> None:
        self.metrics.append(Metric(name, float(value), unit, direction))

    def output(self, item: dict) -> None:
        self.outputs.append(item)


class FleetContext:
    """Per-process (controller or xdist worker) state: boards, suite, store, open agent sessions."""

    def __init__(self, config):
        self.run_id = config.getoption("--fleet-run")
        boards_file = config.getoption("--fleet-boards")
        self.boards = [Board(**b) for b in json.loads(Path(boards_file).read_text())] if boards_file else []
        self.suite: Suite | None = load_suite(config.getoption("--fleet-suite")) if config.getoption("--fleet-suite") else None
        db = config.getoption("--fleet-db")
        if db == "-":
            db = os.environ.get("FLEET_DB")
        self.store = Store(db) if db else None
        self.sessions: dict[str, AgentSession] = {}
        self.infos: dict[str, dict] = {}
        self.ignore_fingerprint = bool(config.getoption("--fleet-ignore-fingerprint"))
        self.refused: dict[str, str] = {}
        nr = config.getoption("--fleet-not-run")
        self.not_run: dict[str, str] = json.loads(Path(nr).read_text()) if nr else {}
        dn = config.getoption("--fleet-done")
        self.done: set[tuple[str, str]] = {tuple(p) for p in json.loads(Path(dn).read_text())} if dn else set()
        #: board -> why it is lost (its session died and a reconnect failed)
        self.lost: dict[str, str] = {}
        # shared by every worker of the run (a board's tests may land on more than one worker)
        self.lost_dir = Path(boards_file).with_name("lost") if boards_file else None
        #: reconnect timeout (s) after a session died: short, so a lost board costs seconds
        self.reconnect_timeout_s = 5.0

    def session(self, board: Board) -> AgentSession:
        """The board's open agent session, (re)opened when missing or dead.

        Raises:
            BoardUnreachable / BoardLost: as AgentSession.open / info.
            FingerprintRefused: the board's stack fingerprint fails a check and
                ``--fleet-ignore-fingerprint`` was not given (remembered: later tests on the
                board are refused without reconnecting).
        """
        if board.name in self.refused:
            raise FingerprintRefused(self.refused[board.name])
        s = self.sessions.get(board.name)
        if s is None or not s.alive:
            with self._board_lock(board.name):  # workers sharing a board open it one at a time
                s = self._open(board, s)
            info = s.info()
            doctor = fingerprint_verdict(board, info, self.ignore_fingerprint)
            info = {**info, "doctor": doctor}
            self.infos[board.name] = info
            if self.store and self.run_id:
                self.store.add_board(self.run_id, board.name, board.board, board.accelerator, board.emulated, info)
            if doctor["status"] == "fail" and not self.ignore_fingerprint:
                s.close()
                self.sessions.pop(board.name, None)
                self.refused[board.name] = (
                    f"board {board.name} refused: stack fingerprint fails `fleet doctor`: {doctor['reason']} "
                    f"(or run anyway with `fleet test --ignore-fingerprint`)")
                raise FingerprintRefused(self.refused[board.name])
        return s

    def _board_lock(self, name: str):
        import contextlib
        import fcntl

        if self.lost_dir is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def lock():
            self.lost_dir.mkdir(exist_ok=True)
            with open(self.lost_dir / f".{name}.lock", "w") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        return lock()

    def _open(self, board: Board, s: AgentSession | None) -> AgentSession:
        """Open the board's session (first time) or reconnect once after it died."""
        if board.name not in self.lost and self.lost_dir is not None and (self.lost_dir / board.name).exists():
            self.lost[board.name] = (self.lost_dir / board.name).read_text()
        if board.name in self.lost:
            raise BoardLost(self.lost[board.name])
        timeout = self.suite.request_timeout_s if self.suite else 120.0
        if s is None:
            s = AgentSession(board, request_timeout_s=timeout).open()
        else:  # the session died in an earlier test: one quick reconnect, else the board is lost
            why = getattr(s, "lost_reason", "") or "its session closed"
            s.close()
            try:
                s = AgentSession(board, request_timeout_s=timeout).open(connect_timeout_s=self.reconnect_timeout_s)
            except BoardUnreachable as e:
                self.sessions.pop(board.name, None)
                self.lost[board.name] = f"board lost: {board.name} ({why}; reconnect failed: {e})"
                if self.lost_dir is not None:
                    self.lost_dir.mkdir(exist_ok=True)
                    (self.lost_dir / board.name).write_text(self.lost[board.name])
                raise BoardLost(self.lost[board.name]) from None
        self.sessions[board.name] = s
        return s

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
        self.sessions.clear()
        if self.store:
            self.store.close()


def fingerprint_verdict(board: Board, info: dict, ignored: bool = False) -> dict:
    """``{"status": "pass"|"fail", "failures": [finding dicts], "reason": text, "ignored": bool,
    "warnings": n}`` for a board's ``info`` (fleet.doctor.checks), stored with the board."""
    import device_agent
    from fleet.doctor.checks import (
        WARN,
        check_info,
        expected_of,
        failures,
        summary_line,
    )

    findings = check_info(info, expected_of(board), device_agent.__version__)
    bad = failures(findings)
    return {"status": "fail" if bad else "pass", "failures": [f.to_dict() for f in bad],
            "reason": summary_line(findings), "ignored": bool(ignored and bad),
            "warnings": sum(f.status == WARN for f in findings)}


def pytest_configure(config):
    if config.getoption("--fleet-boards"):
        config._fleet = FleetContext(config)


def pytest_unconfigure(config):
    ctx = getattr(config, "_fleet", None)
    if ctx:
        ctx.close()


def _ctx(config) -> FleetContext:
    ctx = getattr(config, "_fleet", None)
    if ctx is None:
        raise pytest.UsageError("fleet suites run through `fleet test SUITE_DIR` (it passes --fleet-boards)")
    return ctx


def pytest_generate_tests(metafunc):
    if "board" not in metafunc.fixturenames:
        return
    ctx = _ctx(metafunc.config)
    boards = [b for b in ctx.boards if ctx.suite is None or ctx.suite.matches(b)]
    metafunc.parametrize(
        "board",
        [pytest.param(b, id=b.name, marks=pytest.mark.xdist_group(b.name)) for b in boards],
        scope="module",
    )


def pytest_collection_modifyitems(session, config, items):
    ctx = getattr(config, "_fleet", None)
    if ctx is None or not ctx.done:
        return
    keep, drop = [], []
    for item in items:
        b = _board_of(item)
        (drop if b is not None and (b.name, item.originalname or item.name) in ctx.done else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    ctx = getattr(item.config, "_fleet", None)
    b = _board_of(item)
    if ctx is not None and b is not None and b.name in ctx.not_run:
        pytest.skip(f"not-run: {ctx.not_run[b.name]}")


@pytest.fixture(scope="session")
def suite(request) -> Suite:
    """The suite under test (suite.yml, parsed)."""
    s = _ctx(request.config).suite
    if s is None:
        raise pytest.UsageError("no --fleet-suite given")
    return s


@pytest.fixture
def agent(request, board) -> AgentSession:
    """The board's agent session (opened once per board per worker, reopened if lost)."""
    return _ctx(request.config).session(board)


@pytest.fixture
def board_info(request, board, agent) -> dict:
    """The agent's ``info`` reply for the board (taken when the session opened)."""
    return _ctx(request.config).infos[board.name]


@pytest.fixture
def thresholds(suite, board) -> dict:
    """suite.yml thresholds for the board's class; a key with value None is not enforced."""
    return suite.thresholds_for(board)


@pytest.fixture
def record(request) -> Recorder:
    """Where a test puts its metrics and outputs; stored with its outcome."""
    return request.node.stash.setdefault(_rec_key, Recorder())


def _board_of(item) -> Board | None:
    cs = getattr(item, "callspec", None)
    b = cs.params.get("board") if cs else None
    return b if isinstance(b, Board) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    ctx = getattr(item.config, "_fleet", None)
    board = _board_of(item)
    if ctx is None or ctx.store is None or board is None or item.stash.get(_done_key, False):
        return
    if rep.when == "setup" and rep.passed:
        return
    if rep.when == "teardown" and not rep.failed:
        return
    if rep.skipped:
        status = "skipped"
        msg = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr or "")
        if board.name in ctx.not_run:
            status, msg = "not-run", ctx.not_run[board.name]
    elif rep.passed:
        status, msg = "passed", ""
    else:
        infra = call.excinfo is not None and call.excinfo.errisinstance(InfrastructureError)
        status = "error" if (infra or rep.when != "call") else "failed"
        if call.excinfo is not None:
            msg = f"{call.excinfo.typename}: {call.excinfo.value}"
            if infra:
                msg = f"infrastructure: {msg}"
        else:
            msg = str(rep.longrepr)[-2000:]
    r: Recorder = item.stash.get(_rec_key, Recorder())
    ctx.store.add_result(Result(
        run_id=ctx.run_id, board=board.name, test=item.originalname or item.name, outcome=status,
        message=msg[:4000], duration_s=rep.duration, emulated=board.emulated if r.emulated is None else r.emulated,
        backends=r.backends, models=r.models, outputs=r.outputs, metrics=r.metrics, finished=time.time(),
        telemetry=r.telemetry, telemetry_summary=r.telemetry_summary,
    ))
    item.stash[_done_key] = True
