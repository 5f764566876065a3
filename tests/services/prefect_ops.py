"""Register deployments on the services' Prefect server, from a subprocess with the topology's env.

The test process keeps its own (embedded) Prefect settings for the other tiers; talking to the
services' server from a child process with PREFECT_API_URL set is exactly what a user's shell does.
(Runs and states go through plain HTTP: Topology.run_deployment / flow_run / task_runs.)

    python -m tests.services.prefect_ops deploy POOL ENTRYPOINT...
"""

from __future__ import annotations

import json
import sys

from tests.services.topology import REPO_ROOT

DEPLOYMENT_NAME = "services"


def deploy(pool: str, entrypoints: list[str]) -> dict:
    from prefect import flow

    out = {}
    for entrypoint in entrypoints:
        loaded = flow.from_source(source=str(REPO_ROOT), entrypoint=entrypoint)
        deployment_id = loaded.deploy(name=DEPLOYMENT_NAME, work_pool_name=pool, print_next_steps=False,
                                      ignore_warnings=True)
        out[f"{loaded.name}/{DEPLOYMENT_NAME}"] = str(deployment_id)
    return out


def main(argv: list[str]) -> None:
    command, *args = argv
    if command != "deploy" or len(args) < 2:
        raise SystemExit(__doc__)
    print("PREFECT_OPS " + json.dumps(deploy(args[0], args[1:])))


if __name__ == "__main__":
    main(sys.argv[1:])
