"""JSON on stdout for every ``--json``: timestamps as ISO 8601 UTC strings.

The store and the leases keep times as seconds since the epoch (float); people and tools reading
``--json`` get ``2026-12-02T07:13:19.123Z`` (ISO 8601, RFC 3339 profile:
https://www.rfc-editor.org/rfc/rfc3339) instead. Which keys are times is listed here, once.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

#: keys whose numeric values are seconds since the epoch (run, result, lease and resume rows)
TIME_KEYS = frozenset({"started", "finished", "acquired", "renewed", "expires", "until", "resumed_at"})


def iso_utc(t: float) -> str:
    """``t`` (s since the epoch) as ISO 8601 UTC with milliseconds, e.g. ``2026-12-02T07:13:19.123Z``."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_iso_times(data):
    """A copy of ``data`` (dicts, lists, scalars) with every TIME_KEYS number turned into :func:`iso_utc`."""
    if isinstance(data, dict):
        return {k: (iso_utc(v) if k in TIME_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
                    else with_iso_times(v)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [with_iso_times(v) for v in data]
    return data


def dumps(data) -> str:
    """``data`` as indented JSON with ISO 8601 UTC times (anything else JSON lacks goes through ``str``)."""
    return json.dumps(with_iso_times(data), indent=2, default=str)
