"""The per-host summary table printed after a deploy."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fleet.deploy.run import DeployResult

STYLE = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red", "not run": "red", "refused": "red"}


def render(result: DeployResult, console: Console) -> None:
    """Print one row per host (status, ok/changed/failed counts, reason) and the run folder."""
    table = Table(title=f"deploy {result.run_id} ({result.seconds:.1f} s)")
    for col in ("host", "status", "ok", "changed", "failed", "unreachable", "reason"):
        table.add_column(col, overflow="fold")
    for h in result.hosts:
        table.add_row(
            h.host,
            f"[{STYLE.get(h.status, 'white')}]{h.status}[/]",
            str(h.ok),
            str(h.changed),
            str(h.failed),
            "yes" if h.unreachable else "no",
            h.reason,
        )
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"Ansible output and events: {result.run_dir}/ansible/artifacts/", highlight=False, soft_wrap=True)
