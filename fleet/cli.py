"""The `fleet` command: one sub-command per concept, each registered by its own package.

Each package's ``cli.register(subparsers)`` adds its parser and sets ``func(args) -> int``.
Heavy imports (ansible-runner, torch, pytest) happen inside the handlers, so `fleet --help`
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    try:
        return int(args.func(args) or 0)
    except FleetError as e:
        print(f"fleet: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
