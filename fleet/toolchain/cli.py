"""``fleet toolchain``: install the rknn-toolkit2 venv, show which NPU compilers are usable.

Only argparse is imported at module level.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    """Add ``toolchain`` with ``install`` and ``status`` to the ``fleet`` parser."""
    p = subparsers.add_parser("toolchain", help="NPU compilers: install rknn-toolkit2, status",
                              description="Install and inspect the NPU compile toolchains that "
                                          "fleet models build --target hailo8l|hailo8|rk3588 uses.")
    sub = p.add_subparsers(dest="toolchain_command", metavar="SUBCOMMAND")
    i = sub.add_parser("install", help="create the rknn-toolkit2 venv",
                       description="Create a venv with rknn-toolkit2 and its pinned requirements "
                                   "(from PyPI). The Hailo DFC is not on PyPI: see status.")
    i.add_argument("name", choices=["rknn"], help="toolchain to install")
    i.add_argument("--venv", type=Path, default=None, metavar="PATH",
                   help="venv folder (default: $FLEET_RKNN_VENV or ~/.cache/fleet/toolchains/rknn)")
    i.set_defaults(func=cmd_install)
    s = sub.add_parser("status", help="which NPU compilers are usable here")
    s.add_argument("--venv", type=Path, default=None, metavar="PATH",
                   help="rknn venv to check (default as for install)")
    s.add_argument("--json", action="store_true", help="print JSON on stdout")
    s.set_defaults(func=cmd_status)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_install(args: argparse.Namespace) -> int:
    """Handler of ``fleet toolchain install rknn``: progress on stderr, summary on stdout."""
    from rich.console import Console

    from fleet.toolchain import rknn

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    venv = args.venv or rknn.default_venv()
    err.print(f"[bold]fleet toolchain install rknn[/bold] → {venv} "
              f"({rknn.TOOLKIT}=={rknn.TOOLKIT_VERSION})")
    st = rknn.install(venv, echo=err.print)
    print(f"{rknn.TOOLKIT} {st.version} installed in {st.venv}")
    return 0


def collect_status(venv: Path | None = None) -> dict:
    """{"hailo_dfc": {...}, "rknn": {...}}: usable?, version, where, and what to do if not."""
    from fleet.models.compile import hailo
    from fleet.models.compile import rknn as rknn_compile
    from fleet.toolchain import rknn

    ok, info = hailo.available()
    st = rknn.status(venv)
    return {
        "hailo_dfc": {"available": ok, "version": info if ok else None,
                      "targets": list(hailo.hw_archs()),
                      "reason": "" if ok else info},
        "rknn": {"available": st.installed, "version": st.version, "venv": str(st.venv),
                 "targets": list(rknn_compile.target_platforms()),
                 "reason": "" if st.installed else f"{st.reason}; run {rknn.INSTALL_HINT}"},
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Handler of ``fleet toolchain status``: a table (or JSON); exit 0 either way."""
    data = collect_status(args.venv)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="NPU compile toolchains")
    for col in ("toolchain", "targets", "usable", "version", "where / what to do"):
        t.add_column(col)
    for name, d in data.items():
        t.add_row(name, ", ".join(d["targets"]), "[green]yes[/green]" if d["available"]
                  else "[red]no[/red]", d["version"] or "-",
                  d.get("venv", "fleet's venv") if d["available"] else d["reason"])
    Console().print(t)
    return 0
