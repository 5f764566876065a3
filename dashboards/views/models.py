"""Models page: registered models, versions, aliases (candidate/champion), evaluation results and videos."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import figures, read_mlflow, sources
from dashboards.views._mlflow import client as _client


@st.cache_data(ttl=15, show_spinner=False)
def _models(uri: str):
    return read_mlflow.registered_models(_client(uri))


@st.cache_data(ttl=15, show_spinner=False)
def _versions(uri: str, name: str):
    return read_mlflow.model_versions(_client(uri), name)


@st.cache_data(ttl=60, show_spinner=False)
def _artifacts(uri: str, run_id: str):
    return read_mlflow.list_artifacts_recursive(_client(uri), run_id)


@st.cache_data(ttl=60, show_spinner=False)
def _eval_results(uri: str, run_id: str, artifacts: tuple[str, ...]):
    return read_mlflow.read_eval_results(_client(uri), run_id, list(artifacts))


@st.cache_data(ttl=300, show_spinner=False, max_entries=32)
def _artifact_bytes(uri: str, run_id: str, path: str) -> bytes:
    return read_mlflow.download_artifact_bytes(_client(uri), run_id, path)


def render() -> None:
    st.title("Models")
    uri = sources.mlflow_tracking_uri()
    try:
        models = _models(uri)
    except read_mlflow.StoreMissing as missing:
        st.info(f"No MLflow store yet at `{missing}`: no models registered. Train and evaluate a policy first.")
        st.stop()
    except Exception as exc:
        st.error(f"MLflow not reachable at `{uri}`: {exc}")
        st.stop()
    if not models:
        st.info("No registered models yet (models are registered as `ms2-<task>-<algo>` after evaluation).")
        st.stop()

    st.dataframe(
        pd.DataFrame([{"model": n, **{a: f"v{aliases[a]}" for a in read_mlflow.ALIASES if a in aliases},
                       "other aliases": ", ".join(f"{a}=v{v}" for a, v in aliases.items() if a not in read_mlflow.ALIASES)}
                      for n, aliases, _ in models]),
        hide_index=True,
    )
    names = [n for n, _, _ in models]
    name = st.selectbox("Registered model", names, key="model")
    aliases = dict(next(a for n, a, _ in models if n == name))
    versions = _versions(uri, name)

    st.subheader(name)
    champion = aliases.get("champion")
    c = st.columns(3)
    c[0].metric("Versions", len(versions))
    c[1].metric("Champion", f"v{champion}" if champion else "none")
    c[2].metric("Candidate", f"v{aliases['candidate']}" if aliases.get("candidate") else "none")

    table = pd.DataFrame([{
        "version": f"v{v.version}", "aliases": ", ".join(v.aliases), "eval success rate": v.success_rate,
        "run": v.run_id, "created": v.created, "status": v.status,
    } for v in versions])
    st.dataframe(table, hide_index=True, column_config={"eval success rate": st.column_config.NumberColumn(format="%.2f")})
    if len(versions) > 1:
        ordered = list(reversed(versions))
        st.plotly_chart(figures.success_rate_by_version([v.version for v in ordered], [v.success_rate for v in ordered], champion), key="by-version")

    labels = {v.version: f"v{v.version}" + (f" ({', '.join(v.aliases)})" if v.aliases else "") for v in versions}
    default_version = champion if champion in labels else versions[0].version
    version = st.selectbox("Version", list(labels), index=list(labels).index(default_version), format_func=labels.get, key="version")
    mv = next(v for v in versions if v.version == version)
    st.markdown(f"**{labels[version]}** · source `{mv.source}`")
    if not mv.run_id:
        st.info("This version has no MLflow run, so no evaluation artifacts.")
        st.stop()

    artifacts = _artifacts(uri, mv.run_id)
    results = _eval_results(uri, mv.run_id, tuple(artifacts))
    st.subheader("Evaluation")
    if not results:
        st.info(f"No evaluation results (JSON under `{read_mlflow.EVAL_DIR}/`) in run `{mv.run_id}`.")
    for path, result in results.items():
        st.markdown(f"`{path}`")
        if "error" in result:
            st.warning(result["error"])
            continue
        _headline(read_mlflow.eval_headline(result))
        with st.expander("Full results (JSON)"):
            st.json(result)

    videos = read_mlflow.video_paths(artifacts)
    st.subheader("Evaluation videos")
    if not videos:
        st.info("No .mp4 artifacts in this run.")
    grid = st.columns(2)
    for i, path in enumerate(videos[:12]):
        with grid[i % 2]:
            st.caption(path)
            st.video(_artifact_bytes(uri, mv.run_id, path), format="video/mp4")
    if len(videos) > 12:
        st.caption(f"{len(videos) - 12} more videos not shown.")


def _headline(headline: dict[str, str]) -> None:
    if not headline:
        st.caption("Not an ms2 evaluation result (storage_schemas EvaluationResult); shown as stored.")
        return
    for col, (key, value) in zip(st.columns(len(headline)), headline.items()):
        col.metric(key, value)
    st.caption("mean (95% interval)")
