"""Turn ansible-runner's event stream into per-host results and a live rich view."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.console import Console


@dataclass
class HostResult:
    """One host's outcome of a deploy.

    Attributes:
        host: inventory hostname.
        status: ``ok`` | ``changed`` | ``failed`` | ``unreachable`` | ``not run`` | ``refused``
            (fleet.deploy.preflight: the board's Python/platform cannot install the agent; no
            task ran on it).
        ok, changed, failed, skipped: task counts from Ansible's play recap.
        unreachable: True when Ansible could not reach the host.
        reason: first failure or unreachable message (with the task), "" when fine.
    """

    host: str
    status: str = "not run"
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    reason: str = ""

    def to_dict(self) -> dict:
        """Plain dict for JSON output."""
        return asdict(self)


def _reason(event: dict) -> str:
    data = event.get("event_data", {})
    res = data.get("res", {}) or {}
    parts = [str(res.get("msg", "")).strip()]
    for key in ("stderr", "module_stderr"):
        text = str(res.get(key, "") or "").strip()
        if text:
            parts.append(text.splitlines()[-1])
    if not any(parts) and isinstance(res.get("results"), list):  # a loop: first failed item
        for item in res["results"]:
            if item.get("failed") or item.get("unreachable"):
                parts = [str(item.get("msg", "")).strip()]
                break
    msg = " | ".join(p for p in parts if p) or "no message"
    task = data.get("task", "")
    return f"{task}: {msg}" if task else msg


class EventCollector:
    """ansible-runner ``event_handler``: records outcomes and prints progress to ``console``.

    Args:
        hosts: the hosts the play targets (all get a row, even if Ansible never reports them).
        console: where progress goes (stderr), or None for silence.
    """

    def __init__(self, hosts: list[str], console: Console | None = None):
        self.results = {h: HostResult(h) for h in hosts}
        self.console = console
        self.stats_seen = False

    def _print(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        host = data.get("host", "")
        res = data.get("res", {}) or {}
        if kind == "playbook_on_task_start":
            role = data.get("role", "")
            self._print(f"[bold]▶ {role + ' : ' if role else ''}{data.get('task', '')}[/]")
        elif kind == "runner_on_ok":
            tag = "[yellow]changed[/]" if res.get("changed") else "[green]ok[/]"
            self._print(f"    {tag} {host}")
        elif kind == "runner_on_skipped":
            self._print(f"    [dim]skipped {host}[/]")
        elif kind == "runner_on_failed" and host in self.results:
            if not data.get("ignore_errors"):
                r = self.results[host]
                r.reason = r.reason or _reason(event)
                self._print(f"    [red]failed[/] {host}: {_reason(event)}")
        elif kind == "runner_on_unreachable" and host in self.results:
            r = self.results[host]
            r.unreachable = True
            r.reason = r.reason or _reason(event)
            self._print(f"    [red]unreachable[/] {host}: {_reason(event)}")
        elif kind == "playbook_on_stats":
            self._stats(data)
        return True

    def _stats(self, data: dict) -> None:
        self.stats_seen = True
        for host, r in self.results.items():
            r.ok = int(data.get("ok", {}).get(host, 0))
            r.changed = int(data.get("changed", {}).get(host, 0))
            r.failed = int(data.get("failures", {}).get(host, 0))
            r.skipped = int(data.get("skipped", {}).get(host, 0))
            r.unreachable = r.unreachable or bool(data.get("dark", {}).get(host, 0))

    def finish(self) -> list[HostResult]:
        """Set each host's status from the recap and return the results sorted by host."""
        for r in self.results.values():
            if r.unreachable:
                r.status = "unreachable"
            elif r.failed:
                r.status = "failed"
            elif r.ok or r.changed:
                r.status = "changed" if r.changed else "ok"
            else:
                r.status = "not run"
                r.reason = r.reason or "Ansible reported nothing for this host"
        return [self.results[h] for h in sorted(self.results)]
