"""Deployments of every flow, served by ``ms2 serve`` (and described for work pools in prefect.yaml).

A deployment is named ``<flow>/<deployment>``: demo-to-dataset/default, rerender-demos/default,
evaluate/default, train-bc/default, train-ppo/default, train-dapg/default, train-sac/default,
train-gail/default. Every one runs with no parameters (flows.defaults says what that does):

    ms2 serve                                         # local server on embedded defaults + all deployments
    prefect deployment run train-dapg/default         # PickCube-v0, configs/dapg/pickcube_state.yaml
    prefect deployment run train-bc/default --param task=LiftCube-v0
    prefect deployment run train-bc/default --param overrides='["train.num_steps=2000"]'
    prefect deployment run evaluate/default --param model=models:/ms2-PickCube-v0-bc@champion
"""

from __future__ import annotations

RERENDER_CRON = "0 3 * * *"  # nightly: re-render datasets whose demos, renderer or options changed


def build_deployments(rerender_cron: str | None = RERENDER_CRON) -> list:
    from flows import data, train

    deployments = [
        data.demo_to_dataset.to_deployment(name="default", tags=["cpu", "data"]),
        data.rerender_demos.to_deployment(name="default", cron=rerender_cron, tags=["cpu", "data"]),
        train.evaluate.to_deployment(name="default", tags=["cpu"]),
    ]
    for algo_flow in train.TRAIN_FLOWS.values():
        deployments.append(algo_flow.to_deployment(name="default", tags=["gpu", "train"]))
    return deployments


def serve_all(rerender_cron: str | None = RERENDER_CRON, limit: int | None = None) -> None:
    """Blocks: runs scheduled and triggered flow runs of every deployment in this process."""
    from prefect import serve

    serve(*build_deployments(rerender_cron), limit=limit, print_starting_message=True)
