"""Times as the manifest, the cluster and the signal files give them, made comparable: aware UTC datetimes."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_time(value) -> datetime | None:
    """An RFC 3339 / ISO 8601 time ("2026-11-20T10:32:05Z", fractions, offsets) or a datetime -> aware UTC.

    YAML gives `deployment.deployed_at` as a datetime or a string, the Kubernetes API as a string; a naive time
    is taken as UTC. Anything that is not a time gives None: the caller decides whether that is an error.
    """
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def utc_now() -> str:
    """Now, as every file of a run folder records it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
