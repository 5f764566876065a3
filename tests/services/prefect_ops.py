"""Prefect client operations for the services tests, run in a subprocess with the topology's env.

The test process keeps its own (embedded) Prefect settings for the other tiers; talking to the
services' server from a child process with PREFECT_API_URL set is exactly what a user's shell does.

    python -m tests.services.prefect_ops deploy POOL ENTRYPOINT...     -> {"flow-name/deployment": id}
    python -m tests.services.prefect_ops run DEPLOYMENT PARAMS_JSON    -> {"flow_run_id": ...}
    python -m tests.services.prefect_ops wait FLOW_RUN_ID TIMEOUT_S     -> {"state": ..., "tasks": [...]}
    python -m tests.services.prefect_ops state FLOW_RUN_ID             -> same, without waiting
"""

from __future__ import annotations

import json
import sys
import time

from tests.services.topology import REPO_ROOT

DEPLOYMENT_NAME = "services"


def deploy(pool: str, entrypoints: list[str]) -> dict:
    from prefect import flow

    out = {}
    for entrypoint in entrypoints:
        loaded = flow.from_source(source=str(REPO_ROOT), entrypoint=entrypoint)
        deployment_id = loaded.deploy(name=DEPLOYMENT_NAME, work_pool_name=pool, print_next_steps=False)
        out[f"{loaded.name}/{DEPLOYMENT_NAME}"] = str(deployment_id)
    return out


def run(name: str, params: dict) -> dict:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, parameters=params, timeout=0)
    return {"flow_run_id": str(flow_run.id)}


def describe(flow_run_id: str) -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        state = flow_run.state
        return {
            "state_type": state.type.value if state else None, "state_name": state.name if state else None,
            "message": state.message if state else None, "run_count": flow_run.run_count,
            "tasks": sorted(({"name": t.name, "task_key": t.task_key, "state_type": t.state.type.value,
                              "state_name": t.state.name} for t in tasks if t.state), key=lambda t: t["name"]),
        }


def wait(flow_run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        info = describe(flow_run_id)
        if info["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") or time.monotonic() > deadline:
            return info
        time.sleep(1.0)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "deploy":
        result = deploy(args[0], args[1:])
    elif command == "run":
        result = run(args[0], json.loads(args[1]))
    elif command == "wait":
        result = wait(args[0], float(args[1]))
    elif command == "state":
        result = describe(args[0])
    else:
        raise SystemExit(f"unknown command {command}")
    print("PREFECT_OPS " + json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
