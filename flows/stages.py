"""Prefect tasks: each wraps exactly one ``pipelines.<stage>`` call.

Tasks cache on their input digests (flows.caching), retry transient failures
(never a user error: ``Ms2Error`` means the input is wrong and a retry cannot
help) and publish Prefect artifacts that the UI shows beside the run.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.caching import stage_cache_key
from ms2core.errors import Ms2Error
from storage_schemas.dataset import RenderConfig, RenderResult
from storage_schemas.demos import (
    DemoRecord,
    GenerateDemosConfig,
    GenerateDemosResult,
    ImportDemosConfig,
    ReplayConfig,
    ReplayResult,
)
from storage_schemas.validation import ValidationConfig, ValidationResult


def _transient(task, task_run, state) -> bool:
    """Retry only failures that are not the user's input being wrong."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - no result to inspect: assume transient
        return True
    return not isinstance(exc, Ms2Error)


STAGE = dict(cache_key_fn=stage_cache_key, persist_result=True, retries=1, retry_delay_seconds=5,
             retry_condition_fn=_transient)


@task(name="generate-demos", **STAGE)
def generate_demos(cfg: GenerateDemosConfig) -> GenerateDemosResult:
    from pipelines import demos

    return demos.run(cfg)


@task(name="import-demos", **STAGE)
def import_demos(cfg: ImportDemosConfig) -> DemoRecord:
    from pipelines import demos

    return demos.import_demos(cfg)


@task(name="replay-demos", **STAGE)
def replay_demos(cfg: ReplayConfig) -> ReplayResult:
    from pipelines import replay

    result = replay.run(cfg)
    report = result.report
    rows = [dict(episode=e.episode_id, seed=e.seed, reason=e.reason) for e in report.episodes if not e.converted]
    create_markdown_artifact(
        key="replay-summary",
        markdown=(f"**{report.env_id}** {report.source_control_mode} -> {report.target_control_mode}: "
                  f"{report.num_converted}/{report.num_episodes} episodes converted"
                  + (f", {len(rows)} excluded (see the replay-excluded table)" if rows else "")),
    )
    if rows:
        create_table_artifact(key="replay-excluded", table=rows, description="episodes that failed to convert")
    return result


@task(name="render-dataset", **STAGE)
def render_dataset(cfg: RenderConfig) -> RenderResult:
    from pipelines import render

    return render.run(cfg)


@task(name="validate-dataset", retries=1, retry_delay_seconds=5, retry_condition_fn=_transient)
def validate_dataset(cfg: ValidationConfig) -> ValidationResult:
    # Not cached by Prefect: the validator reuses its own report when the content is unchanged.
    from pipelines import validate

    result = validate.run(cfg)
    report = result.report
    rows = [dict(code=f.code, severity=f.severity, episode=f.episode, key=f.key, index=f.index,
                 value=str(f.value)[:80], expected=str(f.expected)[:80], message=f.message[:200])
            for f in report.findings[:500]]
    create_markdown_artifact(
        key="validation-summary",
        markdown=f"**{report.path}**: {report.status.upper()} — {report.n_errors} errors, {report.n_warnings} "
                 f"warnings, {report.n_episodes} episodes, {report.n_rows} rows",
    )
    create_table_artifact(key="validation-findings", table=rows or [dict(result="no findings")],
                          description=f"validation of {report.path}")
    return result
