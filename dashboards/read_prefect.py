"""Latest Prefect flow runs, asked of the Prefect REST API over plain HTTP.

The dashboard does not import the Prefect client (layer contract) and must not
hang when no server runs, so it asks ``POST {api}/flow_runs/filter`` and
``POST {api}/flows/filter`` with a short timeout and reports unreachability as
a value the page shows, never as an exception.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

TIMEOUT_S = 2.0
RUN_COLUMNS = ["flow", "name", "state", "state_name", "start_time", "end_time", "duration_s", "deployment_id", "id"]


@dataclass
class FlowRunStatus:
    api_url: str
    reachable: bool
    error: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run["state"] or "UNKNOWN"] = counts.get(run["state"] or "UNKNOWN", 0) + 1
        return counts


def _post(url: str, body: dict[str, Any], timeout_s: float) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def latest_flow_runs(api_url: str, limit: int = 50, timeout_s: float = TIMEOUT_S) -> FlowRunStatus:
    try:
        raw_runs = _post(f"{api_url}/flow_runs/filter", {"limit": limit, "sort": "EXPECTED_START_TIME_DESC"}, timeout_s)
        flow_ids = sorted({r.get("flow_id") for r in raw_runs if r.get("flow_id")})
        flows = _post(f"{api_url}/flows/filter", {"flows": {"id": {"any_": flow_ids}}}, timeout_s) if flow_ids else []
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return FlowRunStatus(api_url=api_url, reachable=False, error=str(reason))
    if not isinstance(raw_runs, list):
        return FlowRunStatus(api_url=api_url, reachable=False, error=f"unexpected answer from {api_url}/flow_runs/filter: {str(raw_runs)[:200]}")
    flow_names = {f.get("id"): f.get("name") for f in flows if isinstance(f, dict)}
    runs = []
    for r in raw_runs:
        state = r.get("state") or {}
        runs.append({
            "flow": flow_names.get(r.get("flow_id"), r.get("flow_id")),
            "name": r.get("name"),
            "state": r.get("state_type") or state.get("type"),
            "state_name": r.get("state_name") or state.get("name"),
            "start_time": r.get("start_time") or r.get("expected_start_time"),
            "end_time": r.get("end_time"),
            "duration_s": r.get("total_run_time"),
            "deployment_id": r.get("deployment_id"),
            "id": r.get("id"),
        })
    return FlowRunStatus(api_url=api_url, reachable=True, runs=runs)
