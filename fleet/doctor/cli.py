"""`fleet doctor [--inventory FILE] [--limit PAT] [--require ACC] [--allow-emulated] [--json]`:
the stack fingerprint of every board, checked (``fleet.doctor.checks``), boards in parallel.

Exit codes: 0 every board passes (warnings allowed); 1 a board fails a check; 3 a board is
unreachable, or ``--require ACC`` found no reachable board with that accelerator (real boards
only unless ``--allow-emulated``) — CI runs ``fleet doctor --require hailo8l`` first so a job
fails fast instead of queueing.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from fleet.errors import EXIT_INFRA, EXIT_TESTS_FAILED, FleetError
from fleet.inventory import add_inventory_args


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check every board's stack (HailoRT/driver/firmware, RKNN runtime, "
                                      "HEF arch, PCIe) and say how to fix mismatches")
    add_inventory_args(p)
    p.add_argument("--require", metavar="ACCELERATOR",
                   help="exit 3 at once unless a board with this accelerator (hailo8l, hailo8, hailo10h, rk3588, "
                        "cpu, or a plug-in family's) answers")
    p.add_argument("--allow-emulated", action="store_true", help="let an emulated board satisfy --require")
    p.add_argument("--timeout", type=float, default=60.0, help="per-board agent request timeout, s (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_doctor)


def probe(board, timeout_s: float = 60.0) -> dict:
    """Open the board's agent, take ``info`` and check it.

    Returns:
        ``{"board", "accelerator", "emulated", "arch", "cpu_emulated" (inventory), "reachable",
        "error"?, "machine"? (the kernel's), "cpu"?, "stack"?, "findings",
        "status": pass|fail|unreachable}``. Never raises for board problems (an unreachable
        board or failing agent is ``status: unreachable`` with the error).
    """
    import device_agent
    from fleet.doctor.checks import check_info, expected_of, failures
    from fleet.remote.session import AgentError, AgentSession, InfrastructureError

    out = {"board": board.name, "accelerator": board.accelerator, "emulated": board.emulated,
           "arch": board.arch or None, "cpu_emulated": board.cpu_emulated or None,
           "host": f"{board.host}:{board.port}"}
    try:
        with AgentSession(board, request_timeout_s=timeout_s) as s:
            info = s.info()
    except (InfrastructureError, AgentError) as e:
        return {**out, "reachable": False, "status": "unreachable", "error": str(e), "findings": []}
    findings = check_info(info, expected_of(board), device_agent.__version__)
    machine = ((info.get("stack") or {}).get("kernel") or {}).get("machine") or (info.get("cpu") or {}).get("machine")
    return {**out, "reachable": True, "machine": machine, "cpu": info.get("cpu"),
            "agent_accelerator": info.get("accelerator"),
            "agent_emulated": info.get("emulated"), "stack": info.get("stack"),
            "findings": [f.to_dict() for f in findings],
            "status": "fail" if failures(findings) else "pass"}


def _parallel(boards, timeout_s: float) -> list[dict]:
    if not boards:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(boards))) as ex:
        return list(ex.map(lambda b: probe(b, timeout_s), boards))


def run_doctor(inventory: str, limit: str | None = None, require: str | None = None,
               allow_emulated: bool = False, timeout_s: float = 60.0) -> tuple[list[dict], int, str]:
    """Probe and check the boards. Returns (reports, exit code, message).

    With ``require``, the boards carrying that accelerator (real ones unless ``allow_emulated``)
    are probed first; when none answers, returns at once with exit 3 and the reason, without
    probing the rest.

    Raises:
        FleetError: unreadable inventory, or an unknown accelerator name.
    """
    from fleet.inventory import accelerators, default_inventory, load_inventory

    inventory = default_inventory(inventory)
    boards = load_inventory(inventory, limit)
    reports: dict[str, dict] = {}
    if require:
        if require not in accelerators():
            raise FleetError(f"--require {require}: unknown accelerator", f"use one of {sorted(accelerators())}")
        cands = [b for b in boards if b.accelerator == require and (allow_emulated or not b.emulated)]
        if not cands:
            emu = [b.name for b in boards if b.accelerator == require and b.emulated]
            hint = (f" ({len(emu)} emulated: {', '.join(emu)}; pass --allow-emulated to accept them)" if emu else "")
            return [], EXIT_INFRA, (f"no {'' if allow_emulated else 'real '}board with accelerator {require} "
                                    f"in {inventory}{hint}")
        for r in _parallel(cands, timeout_s):
            reports[r["board"]] = r
        up = [r for r in reports.values() if r["reachable"] and r.get("agent_accelerator") == require
              and (allow_emulated or not r.get("agent_emulated"))]
        if not up:
            why = "; ".join(f"{r['board']}: {r.get('error') or 'agent reports ' + str(r.get('agent_accelerator'))}"
                            for r in reports.values())
            return list(reports.values()), EXIT_INFRA, f"no board with accelerator {require} answers ({why})"
    rest = [b for b in boards if b.name not in reports]
    for r in _parallel(rest, timeout_s):
        reports[r["board"]] = r
    out = [reports[b.name] for b in boards]
    if any(r["status"] == "unreachable" for r in out):
        return out, EXIT_INFRA, "a board is unreachable"
    if any(r["status"] == "fail" for r in out):
        return out, EXIT_TESTS_FAILED, "a board fails a stack check"
    return out, 0, "every board passes"


def _fingerprint_line(stack: dict | None) -> str:
    if not stack:
        return ""
    parts = [f"{(stack.get('os') or {}).get('name')}", f"kernel {(stack.get('kernel') or {}).get('release')}",
             f"Python {(stack.get('python') or {}).get('version')}", f"agent {(stack.get('agent') or {}).get('version')}"]
    h = stack.get("hailo") or {}
    if h.get("applicable"):
        parts.append("HailoRT lib {} / driver {} / fw {}".format(*((h.get(k) or {}).get("version") for k in
                                                                 ("library", "driver", "firmware"))))
    r = stack.get("rknn") or {}
    if r.get("applicable"):
        parts.append(f"librknnrt {(r.get('runtime') or {}).get('version')} / rknpu {(r.get('driver') or {}).get('version')}")
    return " · ".join(parts)


def cmd_doctor(args) -> int:
    reports, rc, msg = run_doctor(args.inventory, args.limit, args.require, args.allow_emulated, args.timeout)
    if args.json:
        print(json.dumps({"exit_code": rc, "message": msg, "boards": reports}, indent=2, default=str))
        return rc
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    colors = {"ok": "green", "fail": "red", "warn": "yellow", "n/a": "dim"}
    for r in reports:
        st = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "unreachable": "[magenta]UNREACHABLE[/]"}[r["status"]]
        arch = r.get("machine") or r.get("arch")
        cpu = f" · {arch}" if arch else ""
        if r.get("cpu_emulated"):
            cpu += f" (CPU emulated by {r['cpu_emulated']})"
        title = f"{r['board']} · {r['accelerator']}{' (emulated)' if r['emulated'] else ''}{cpu} · {st}"
        if not r["reachable"]:
            console.print(f"[bold]{title}[/]\n  {r['error']}")
            continue
        t = Table(title=title, caption=_fingerprint_line(r.get("stack")), title_justify="left")
        t.add_column("check")
        t.add_column("status")
        t.add_column("detail", overflow="fold")
        t.add_column("fix", overflow="fold")
        for f in r["findings"]:
            t.add_row(f["check"], f"[{colors.get(f['status'], 'white')}]{f['status']}[/]", f["detail"], f["fix"])
        console.print(t)
    console.print(f"[bold red]fleet doctor: {msg}[/]" if rc else f"[green]{msg}[/]")
    return rc
