"""The `fleet` command: one sub-command per concept, each registered by its own package.

Each package's ``cli.register(subparsers)`` adds its parser and sets ``func(args) -> int``.
Heavy imports (ansible-runner, torch, pytest) happen inside the handlers, so `fleet --help`
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from device_agent.families import FamilyError
from fleet import __version__
from fleet.errors import FleetError

# (module with register()) in the order they appear in --help
COMMANDS = [
    "fleet.sim.cli",
    "fleet.datasets.cli",
    "fleet.deploy.cli",
    "fleet.models.cli",
    "fleet.toolchain.cli",
    "fleet.runner.cli",
    "fleet.results.cli",
    "fleet.results.runs_cli",
    "fleet.report.cli",
    "fleet.dashboard.cli",
    "fleet.doctor.cli",
    "fleet.leases.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet",
        description="Provision edge-AI boards with Ansible and run pytest suites on them.",
    )
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``fleet`` command; returns its exit status.

    Exit status: 0 ok; 1 tests failed, or an internal error (one line on stderr naming a log file
    that holds the traceback: never a traceback on the terminal); 2 bad input (a FleetError: the
    message names the thing and the fix); 3 infrastructure; 130 interrupted; 141 (128 + SIGPIPE,
    what a shell reports for a process SIGPIPE ended) when the reader of stdout went away, e.g.
    ``fleet results --json | head``: quietly, as the Python docs advise
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
    """
    try:
        rc = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here as often as in print()
        return rc
    except FleetError as e:
        print(f"fleet: error: {e}", file=sys.stderr)
        return e.exit_code
    except FamilyError as e:  # a board-family plug-in that cannot be used, met outside fleet.families
        print(f"fleet: error: {FleetError(e.message, e.fix)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader is gone: point stdout at /dev/null so the interpreter's final flush at
        # exit does not raise again (the Python docs' recipe), and say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # noqa: BLE001 - the one place every unexpected error is turned into a line
        where = _log_traceback(e)
        msg = " ".join(str(e).split())[:300]
        print(f"fleet: internal error: {type(e).__name__}: {msg} (traceback in {where})", file=sys.stderr)
        return EXIT_INTERNAL


EXIT_INTERNAL = 1
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE is 13 on Linux


def _log_traceback(e: BaseException) -> str:
    """Write ``e``'s traceback (and the argv) to a new file in :func:`fleet.paths.logs_dir` (the
    system temp folder if that is not writable); returns the file's path."""
    import tempfile
    import time
    import traceback

    from fleet.paths import logs_dir

    text = f"fleet {__version__}\nargv: {sys.argv!r}\n\n" + "".join(traceback.format_exception(e))
    name = time.strftime("internal-%Y%m%dT%H%M%SZ-", time.gmtime())
    for folder in (logs_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=name, suffix=".log", dir=folder)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return "(no writable log folder)"


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `fleet test SUITE -- PYTEST_ARGS`: argparse's nested sub-commands reject what follows `--`,
    # so it is split off here and handed to the command that takes it.
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    args = parser.parse_args(argv)
    if passthrough:
        if not hasattr(args, "pytest_args"):
            parser.error(f"arguments after '--' ({' '.join(passthrough)}) are pytest options for `fleet test` only")
        args.pytest_args = [*(args.pytest_args or []), *passthrough]
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
