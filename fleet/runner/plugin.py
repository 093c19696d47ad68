"""The fleet pytest plugin: boards as parameters, one agent session per board, results to the store.

Loaded by ``fleet test`` with ``-p fleet.runner.plugin``. It

* parametrizes every test that takes the ``board`` fixture over the boards the suite matches, and
  gives each board to one pytest-xdist worker (``fleet test`` runs ``--dist each``; worker K of N
  keeps every N-th board from the K-th and deselects the rest, see :func:`owned_boards`): a board
  is an exclusive resource, so its tests run in one process, one at a time, boards in parallel;
* opens the sessions of a process's next boards ahead of their first test (``OPEN_AHEAD`` at a
  time, in threads) and closes a board's session after its last test, so SSH handshakes and agent
  start-ups overlap with other boards' tests instead of queueing behind them;
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
  past the request timeout, link down) the next test reconnects and starts a new agent; if that
  fails the board is *lost* and its remaining tests are ``error`` "board lost: ..." at once;
* retries a board that is rebooting instead of failing it: SSH connects are retried with backoff
  for the board's reconnect bound (inventory ``fleet_reconnect_timeout_s``, else suite.yml
  ``reconnect_timeout_s``, default 5 s), and a request whose SSH link drops reconnects within it
  and is sent again (fleet.remote.session.connect_with_retry, AgentSession.request); each retry
  goes on the result of the test it happened in (metrics ``reconnects`` and ``connect_retries``
  and a note in its message). A board not back within the bound is lost, as above;
* records the tests of boards another run has leased (``--fleet-not-run``) as ``not-run`` with the
  holder, and leaves out (board, test) pairs a resumed run already finished (``--fleet-done``).

A result is keyed by :func:`result_key` (the test's name with its parameters, the board's left out)
on its board, and written once its teardown is over: its duration is setup + call + teardown, as
pytest's own JUnit report counts it, because a suite's measurements run in its fixtures.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet.inventory import Board
from fleet.remote.session import (
    RECONNECT_TIMEOUT_S,
    AgentSession,
    BoardLost,
    BoardUnreachable,
    InfrastructureError,
    retry_note,
)

# fleet.results.store (SQLAlchemy) and fleet.runner.suite (numpy, via fleet.measure) are imported
# where used: the xdist controller process runs no test and needs neither (~0.5 s of start-up).

_rec_key = pytest.StashKey["Recorder"]()
_done_key = pytest.StashKey[bool]()
#: the item's verdict so far, (outcome, message): the call's, or the first phase that did not pass
_verdict_key = pytest.StashKey[tuple]()
#: seconds of the phases reported so far (setup, call, teardown)
_duration_key = pytest.StashKey[float]()
#: why the item may not run: another test of the suite has its key on its board
_clash_key = pytest.StashKey[str]()
_agent_key = pytest.StashKey[AgentSession]()

#: Sessions a process opens ahead of use. Opening one is mostly waiting (SSH handshake, then the
#: agent's start-up: ~0.1 s + ~0.3 s on an idle emulated board, benchmarks/fleet_scale.py "SSH open
#: + first info"), so a few in flight hide it behind the current board's tests; more would only
#: leave agents idle on the board longer (each holds its imports, ~100 MB).
OPEN_AHEAD = 4


def pytest_addoption(parser):
    g = parser.getgroup("fleet")
    g.addoption("--fleet-run", help="run id in the results store")
    g.addoption("--fleet-boards", help="JSON file with the boards to test (written by `fleet test`)")
    g.addoption("--fleet-db", help="results store: SQLite path or SQLAlchemy URL; '-' = the URL in $FLEET_DB "
                "(how `fleet test` passes a server URL, so a password never shows on a command line)")
    g.addoption("--fleet-suite", help="suite folder (holds suite.yml)")
    g.addoption("--fleet-smoke", action="store_true", default=False,
                help="run the suite's smoke selection on every board (boards whose CPU is emulated always do)")
    g.addoption("--fleet-ignore-fingerprint", action="store_true", default=False,
                help="run on boards whose stack fingerprint fails `fleet doctor` (the run is labelled)")
    g.addoption("--fleet-not-run", help="JSON file {board: reason}: boards whose tests are recorded not-run")
    g.addoption("--fleet-done", help="JSON file [[board, test], ...]: pairs a resumed run already finished "
                "(test as keyed in the store: fleet.runner.plugin.result_key)")


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

    metrics: list = field(default_factory=list)  # fleet.results.store.Metric
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
        from fleet.results.store import Metric

        self.metrics.append(Metric(name, float(value), unit, direction))

    def output(self, item: dict) -> None:
        self.outputs.append(item)


class FleetContext:
    """Per-process (pytest without xdist, or an xdist worker) state: boards, suite, store, open
    agent sessions. The xdist controller process, which runs no test, gets boards only."""

    def __init__(self, config):
        self.run_id = config.getoption("--fleet-run")
        boards_file = config.getoption("--fleet-boards")
        self.boards = [Board.from_dict(b) for b in json.loads(Path(boards_file).read_text())] if boards_file else []
        runs_tests = not is_xdist_controller(config)
        self.suite = None  # fleet.runner.suite.Suite
        if runs_tests and config.getoption("--fleet-suite"):
            from fleet.runner.suite import load_suite

            self.suite = load_suite(config.getoption("--fleet-suite"))
        db = config.getoption("--fleet-db")
        if db == "-":
            db = os.environ.get("FLEET_DB")
        self.store = None  # fleet.results.store.Store
        if runs_tests and db:
            from fleet.results.store import Store

            self.store = Store(db)
        self.sessions: dict[str, AgentSession] = {}
        self.infos: dict[str, dict] = {}
        self.ignore_fingerprint = bool(config.getoption("--fleet-ignore-fingerprint"))
        self.smoke = bool(config.getoption("--fleet-smoke"))
        self.refused: dict[str, str] = {}
        nr = config.getoption("--fleet-not-run")
        self.not_run: dict[str, str] = json.loads(Path(nr).read_text()) if nr else {}
        dn = config.getoption("--fleet-done")
        self.done: set[tuple[str, str]] = {tuple(p) for p in json.loads(Path(dn).read_text())} if dn else set()
        #: board -> why it is lost (its session died and a reconnect failed)
        self.lost: dict[str, str] = {}
        # shared by every worker of the run: `fleet test` gives each board to one worker
        # (owned_boards), but pytest run by hand with another --dist may spread a board's tests
        self.lost_dir = Path(boards_file).with_name("lost") if boards_file else None
        #: this process's boards in order of first use, and how many of their tests are left
        self._order: list[Board] = []
        self._left: dict[str, int] = {}
        #: sessions being opened ahead of use: board -> Future[(AgentSession, info)]
        self._ahead: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        #: closes sessions off the main thread: a close waits for the agent to exit (~0.1 s; up
        #: to SHUTDOWN_GRACE_S and a kill for a stuck one), which the next board need not wait for
        self._closer: ThreadPoolExecutor | None = None

    def reconnect_bound(self, board: Board) -> float:
        """How long (s) to retry SSH to ``board``: its inventory ``fleet_reconnect_timeout_s``, else
        suite.yml ``reconnect_timeout_s``, else ``RECONNECT_TIMEOUT_S``."""
        if board.reconnect_timeout_s is not None:
            return board.reconnect_timeout_s
        return self.suite.reconnect_timeout_s if self.suite else RECONNECT_TIMEOUT_S

    def _new_session(self, board: Board) -> AgentSession:
        timeout = self.suite.request_timeout_s if self.suite else 120.0
        return AgentSession(board, request_timeout_s=timeout, reconnect_timeout_s=self.reconnect_bound(board))

    def suite_boards(self) -> list[Board]:
        """The boards the suite runs on (those it matches), in inventory order."""
        return [b for b in self.boards if self.suite is None or self.suite.matches(b)]

    def plan(self, boards: list[Board]) -> None:
        """Take this process's test order (the board of each of its tests, in run order) and start
        opening the first boards' sessions (``OPEN_AHEAD``)."""
        for b in boards:
            if b.name not in self._left:
                self._order.append(b)
            self._left[b.name] = self._left.get(b.name, 0) + 1
        self._open_ahead(0)

    def _open_ahead(self, start: int) -> None:
        """Start opening the sessions of the ``OPEN_AHEAD`` boards after position ``start`` in the
        order of first use that are not open, opening, refused, lost or not-run."""
        wanted = [b for b in self._order[start:start + OPEN_AHEAD]
                  if b.name not in self.sessions and b.name not in self._ahead and b.name not in self.refused
                  and b.name not in self.lost and b.name not in self.not_run and self._left.get(b.name)]
        if not wanted:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=OPEN_AHEAD, thread_name_prefix="fleet-open")
        for b in wanted:
            self._ahead[b.name] = self._pool.submit(self._open_new, b)

    def _open_new(self, board: Board) -> tuple[AgentSession, dict]:
        """Open a new session and take the agent's ``info`` (runs in an opener thread: touches
        nothing but the session it makes). Raises as AgentSession.open / info."""
        s = self._new_session(board).open()
        try:
            return s, s.info()
        except BaseException:
            s.close()
            raise

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
            ahead = self._ahead.pop(board.name, None)
            self._keep_open_ahead(board)  # the next boards open while this one is finished
            if s is None and ahead is not None:
                try:
                    s, info = ahead.result()  # raises what opening raised, as a direct open would
                except BoardUnreachable as e:  # not there within the bound: lost
                    raise self._mark_lost(board, f"board lost: {board.name} ({e})") from None
                try:
                    self._check_lost(board)
                except BoardLost:
                    s.close()
                    raise
                self.sessions[board.name] = s
            if s is None or not s.alive:  # never opened, or died (before use, or in an earlier test)
                with self._board_lock(board.name):  # workers sharing a board open it one at a time
                    s = self._open(board, s)
                info = s.info()
            doctor = fingerprint_verdict(board, info, self.ignore_fingerprint)
            from fleet.runner.emulation import board_labels

            # arch, cpu_emulated and the selection the board ran: every result of it is labelled so
            info = {**info, "doctor": doctor, **board_labels(board, self.suite, self.smoke)}
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

    def _keep_open_ahead(self, board: Board) -> None:
        """Board ``board`` just got its session: open the next ones in the order of first use."""
        names = [b.name for b in self._order]
        if board.name in names:
            self._open_ahead(names.index(board.name) + 1)

    def finished(self, board: Board) -> None:
        """One of ``board``'s tests in this process is over; after its last, close the session (the
        agent exits) and keep the next boards opening."""
        if board.name not in self._left:
            return
        self._left[board.name] -= 1
        if self._left[board.name] > 0:
            return
        s = self.sessions.pop(board.name, None)
        if s is not None:
            self._close_later(s)
        self._keep_open_ahead(board)

    def _close_later(self, s: AgentSession) -> None:
        if self._closer is None:
            self._closer = ThreadPoolExecutor(max_workers=OPEN_AHEAD, thread_name_prefix="fleet-close")
        self._closer.submit(s.close)

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

    def _check_lost(self, board: Board) -> None:
        """Raise BoardLost if this or another worker of the run gave the board up."""
        if board.name not in self.lost and self.lost_dir is not None and (self.lost_dir / board.name).exists():
            self.lost[board.name] = (self.lost_dir / board.name).read_text()
        if board.name in self.lost:
            raise BoardLost(self.lost[board.name])

    def _mark_lost(self, board: Board, why: str) -> BoardLost:
        """Give ``board`` up for the run (this and every other worker); returns the BoardLost."""
        self.sessions.pop(board.name, None)
        self.lost[board.name] = why
        if self.lost_dir is not None:
            self.lost_dir.mkdir(exist_ok=True)
            (self.lost_dir / board.name).write_text(why)
        return BoardLost(why)

    def _open(self, board: Board, s: AgentSession | None) -> AgentSession:
        """Open the board's session (first time) or reconnect after it died, retrying SSH within
        the board's reconnect bound; not back within it, the board is lost."""
        self._check_lost(board)
        if s is None:
            try:
                s = self._new_session(board).open()
            except BoardUnreachable as e:
                raise self._mark_lost(board, f"board lost: {board.name} ({e})") from None
        else:  # the session died in an earlier test: reconnect within the bound, else the board is lost
            why = getattr(s, "lost_reason", "") or "its session closed"
            s.close()
            if s.board_lost:  # it already spent the bound reconnecting mid-request
                raise self._mark_lost(board, s.board_lost)
            bound = self.reconnect_bound(board)
            try:
                s = self._new_session(board).open(connect_timeout_s=min(15.0, max(bound, 5.0)))
            except BoardUnreachable as e:
                raise self._mark_lost(board, f"board lost: {board.name} ({why}; reconnect failed: {e})") from None
        self.sessions[board.name] = s
        return s

    def close(self) -> None:
        """Close every session, those still being opened ahead included (their agents exit)."""
        if self._pool is not None:
            # opens not started are dropped; one in flight ends within its connect timeout
            self._pool.shutdown(wait=True, cancel_futures=True)
            for fut in self._ahead.values():
                if not fut.cancelled() and fut.exception() is None:
                    self._close_later(fut.result()[0])
            self._ahead.clear()
        for s in self.sessions.values():
            self._close_later(s)
        self.sessions.clear()
        if self._closer is not None:
            self._closer.shutdown(wait=True)  # every close done (or its agent killed) before we exit
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


def is_xdist_controller(config) -> bool:
    """True in the xdist controller process: ``-n`` given (xdist's ``numprocesses``) and not a
    worker (workers have ``workerinput``). It runs no test."""
    return bool(config.getoption("numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config):
    if config.getoption("--fleet-boards"):
        config._fleet = FleetContext(config)
        if is_xdist_controller(config):
            config.pluginmanager.register(WorkerTestCount(), "fleet-worker-test-count")


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
    metafunc.parametrize("board", [pytest.param(b, id=b.name) for b in _ctx(metafunc.config).suite_boards()],
                         scope="module")


def owned_boards(boards: list[Board], worker: str | None, workers: int) -> set[str]:
    """Names of the boards a process runs: all of them without xdist, else worker ``gwK`` of
    ``workers`` keeps boards K, K+N, K+2N, ... of ``boards`` (the suite's boards in inventory order).

    ``fleet test`` runs xdist with ``--dist each`` (every worker collects every test) and each worker
    deselects the boards it does not own, so a worker knows all its boards before its first test and
    can open their sessions ahead (``OPEN_AHEAD``); xdist's ``loadgroup`` hands out boards one at a
    time, so a worker never knew which board came next.
    """
    if not worker or workers <= 1:
        return {b.name for b in boards}
    k = int(worker.removeprefix("gw"))
    return {b.name for i, b in enumerate(boards) if i % workers == k}


def pytest_collection_modifyitems(session, config, items):
    ctx = getattr(config, "_fleet", None)
    if ctx is None:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    mine = owned_boards(ctx.suite_boards(), worker, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    _mark_key_clashes(items)
    keep, drop = [], []
    for item in items:
        b = _board_of(item)
        if b is None:  # a test without a board runs once, on the first worker
            (keep if worker in (None, "gw0") else drop).append(item)
        elif b.name not in mine or (b.name, result_key(item)) in ctx.done:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class WorkerTestCount:
    """xdist controller plugin: the run's test count is the sum of the workers' collections.

    xdist's ``each`` mode assumes every worker holds the whole collection and keeps the last
    worker's count as the run's. Workers here own disjoint boards, so the progress shown would
    pass 100 % and a worker left with no test (e.g. a resume whose boards all finished) would make
    pytest exit 5 "no tests collected" although the others ran tests. The sum is put back on the
    session before each report is shown and after the test loop.
    """

    def __init__(self):
        self.total = 0
        self.session = None

    def pytest_sessionstart(self, session):
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.total += len(ids)

    def _apply(self) -> None:
        if self.session is not None and self.total:
            self.session.testscollected = self.total

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report):
        self._apply()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session):
        result = yield
        self._apply()
        return result


def pytest_collection_finish(session):
    ctx = getattr(session.config, "_fleet", None)
    if ctx is not None and not session.config.option.collectonly:
        ctx.plan([b for b in map(_board_of, session.items) if b is not None])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    ctx = getattr(item.config, "_fleet", None)
    b = _board_of(item)
    if ctx is not None and b is not None:
        ctx.finished(b)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    ctx = getattr(item.config, "_fleet", None)
    b = _board_of(item)
    if ctx is not None and b is not None and b.name in ctx.not_run:
        pytest.skip(f"not-run: {ctx.not_run[b.name]}")
    if _clash_key in item.stash:
        raise KeyClash(item.stash[_clash_key])


@pytest.fixture(scope="session")
def suite(request):
    """The suite under test (suite.yml, parsed: a fleet.runner.suite.Suite)."""
    s = _ctx(request.config).suite
    if s is None:
        raise pytest.UsageError("no --fleet-suite given")
    return s


@pytest.fixture
def agent(request, board) -> AgentSession:
    """The board's agent session (opened once per board per worker, reopened if lost)."""
    s = _ctx(request.config).session(board)
    request.node.stash[_agent_key] = s  # its retries go on this test's result
    return s


@pytest.fixture
def board_info(request, board, agent) -> dict:
    """The agent's ``info`` reply for the board (taken when the session opened)."""
    return _ctx(request.config).infos[board.name]


@pytest.fixture
def smoke(request, suite, board) -> bool:
    """True when ``board`` runs the suite's smoke selection (suite.yml ``smoke:``): its CPU is
    emulated (inventory ``cpu_emulated``) or ``fleet test --smoke`` was given
    (fleet.runner.emulation)."""
    return suite.uses_smoke(board, _ctx(request.config).smoke)


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


def result_key(item) -> str:
    """A test's key on its board in the results store: its name with its parameters, the board's
    own parameter id left out: ``test_retrieval_quality[cisi]`` for the item
    ``test_retrieval_quality[pi5-a-cisi]`` on board ``pi5-a``; ``test_wer`` for ``test_wer[pi5-a]``.

    The parameter ids are pytest's own (``CallSpec2._idlist``, one per ``parametrize`` or
    parametrised fixture, in the order pytest joins them with "-" into the item's name); the
    board's is the board name (:func:`pytest_generate_tests`). Removing one occurrence of a
    value gives the same list whichever occurrence it is, so a parameter that happens to equal
    the board name cannot be removed in its place.
    """
    name = item.originalname or item.name
    cs = getattr(item, "callspec", None)
    if cs is None:
        return item.name
    ids = list(getattr(cs, "_idlist", None) or [])
    if not ids and cs.id:  # a pytest without _idlist: the ids are only known joined
        ids = [cs.id]
    b = _board_of(item)
    if b is not None:
        if b.name in ids:
            ids.remove(b.name)
        elif len(ids) == 1:  # joined ids: cut the board's out of "board-rest" / "rest-board"
            joined = ids[0]
            if joined == b.name:
                ids = []
            elif joined.startswith(b.name + "-"):
                ids = [joined[len(b.name) + 1:]]
            elif joined.endswith("-" + b.name):
                ids = [joined[:-len(b.name) - 1]]
    return f"{name}[{'-'.join(ids)}]" if ids else name


class KeyClash(Exception):
    """Two tests of a suite would be stored under one key on one board."""


def _mark_key_clashes(items) -> None:
    """Two tests that would be stored under one key on one board (same name and parameters in
    two modules of a suite) would mix their results: each of them errors at setup, naming both
    node ids and the fix (:class:`KeyClash`), and no test of theirs runs. (Raising during
    collection would be cleaner, but an xdist worker reports that as an INTERNALERROR traceback.)
    """
    groups: dict[tuple[str, str], list] = {}
    for item in items:
        b = _board_of(item)
        if b is not None:
            groups.setdefault((b.name, result_key(item)), []).append(item)
    for (board, key), group in groups.items():
        if len({i.nodeid for i in group}) > 1:
            msg = (f"tests {', '.join(i.nodeid for i in group)} would all be stored as {key!r} on board {board}: "
                   "results are keyed by test name and parameters, so rename all but one of them")
            for item in group:
                item.stash[_clash_key] = msg


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's duration and the first phase that did not pass; after the teardown,
    write the one result of the item (setup + call + teardown seconds)."""
    outcome = yield
    rep = outcome.get_result()
    ctx = getattr(item.config, "_fleet", None)
    board = _board_of(item)
    if ctx is None or ctx.store is None or board is None or item.stash.get(_done_key, False):
        return
    item.stash[_duration_key] = item.stash.get(_duration_key, 0.0) + (rep.duration or 0.0)
    prev = item.stash.get(_verdict_key, None)
    # the first phase that did not pass decides; a passed call is overruled by a broken teardown
    if not (rep.passed and rep.when != "call") and (prev is None or (prev[0] == "passed" and not rep.passed)):
        item.stash[_verdict_key] = _verdict(rep, call, board, ctx)
    if rep.when == "teardown":
        _write_result(item, ctx, board)


def _verdict(rep, call, board: Board, ctx: FleetContext) -> tuple[str, str]:
    """(outcome, message) of one phase report: passed | failed | error (infrastructure, or a
    setup/teardown failure) | skipped | not-run (the board is leased by another run)."""
    if rep.skipped:
        msg = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr or "")
        if board.name in ctx.not_run:
            return "not-run", ctx.not_run[board.name]
        return "skipped", msg
    if rep.passed:
        return "passed", ""
    infra = call.excinfo is not None and call.excinfo.errisinstance(InfrastructureError)
    status = "error" if (infra or rep.when != "call") else "failed"
    if call.excinfo is not None:
        msg = f"{call.excinfo.typename}: {call.excinfo.value}"
        if infra:
            msg = f"infrastructure: {msg}"
    else:
        msg = str(rep.longrepr)[-2000:]
    if rep.when == "teardown":
        msg = f"in teardown: {msg}"
    return status, msg


def _write_result(item, ctx: FleetContext, board: Board) -> None:
    status, msg = item.stash.get(_verdict_key, ("passed", ""))
    r: Recorder = item.stash.get(_rec_key, Recorder())
    s = item.stash.get(_agent_key, None)
    retries = s.take_retries() if s is not None else []
    if retries:  # the board was retried during this test (rebooting, sshd restarted): say so
        r.metric("reconnects", sum(e.kind == "reconnect" for e in retries), "", "lower")
        r.metric("connect_retries", sum(e.kind == "connect" for e in retries), "", "lower")
        msg = "; ".join(filter(None, [msg, retry_note(retries)]))
    from fleet.results.store import Result

    ctx.store.add_result(Result(
        run_id=ctx.run_id, board=board.name, test=result_key(item), outcome=status, message=msg[:4000],
        duration_s=item.stash.get(_duration_key, 0.0),
        emulated=board.emulated if r.emulated is None else r.emulated,
        backends=r.backends, models=r.models, outputs=r.outputs, metrics=r.metrics, finished=time.time(),
        telemetry=r.telemetry, telemetry_summary=r.telemetry_summary, nodeid=item.nodeid,
    ))
    item.stash[_done_key] = True
