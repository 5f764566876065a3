"""Training page: runs by task and algorithm, overlaid learning curves, parameters side by side."""

from __future__ import annotations

import streamlit as st

from dashboards import figures, read_mlflow, sources
from dashboards.views._mlflow import client as _client


@st.cache_data(ttl=15, show_spinner=False)
def _runs(uri: str):
    return read_mlflow.runs_table(_client(uri))


@st.cache_data(ttl=15, show_spinner=False)
def _histories(uri: str, run_ids: tuple[str, ...], keys: tuple[str, ...]):
    return read_mlflow.metric_histories(_client(uri), list(run_ids), list(keys))


@st.cache_data(ttl=15, show_spinner=False)
def _params(uri: str, run_ids: tuple[str, ...], labels: tuple[tuple[str, str], ...]):
    return read_mlflow.params_side_by_side(_client(uri), list(run_ids), dict(labels))


def render() -> None:
    st.title("Training")
    uri = sources.mlflow_tracking_uri()
    try:
        runs = _runs(uri)
    except read_mlflow.StoreMissing as missing:
        st.info(f"No MLflow store yet at `{missing}`. Train something (`ms2 train ...`) or set MLFLOW_TRACKING_URI to a server.")
        st.stop()
    except Exception as exc:  # a server that is down must not take the page with it
        st.error(f"MLflow not reachable at `{uri}`: {exc}")
        st.stop()
    st.caption(f"MLflow: `{uri}`")
    if runs.empty:
        st.info("No runs tracked yet.")
        st.stop()

    f1, f2 = st.columns(2)
    tasks = sorted(runs["task"].unique())
    task = f1.selectbox("Task", tasks, key="task")
    task_runs = runs[runs["task"] == task]
    algos = sorted(task_runs["algo"].unique())
    chosen_algos = f2.multiselect("Algorithm", algos, default=algos, key="algos")
    task_runs = task_runs[task_runs["algo"].isin(chosen_algos)]

    metric_keys = sorted(c for c in runs.columns if c not in read_mlflow.RUN_COLUMNS)
    task_metric_keys = [k for k in metric_keys if task_runs[k].notna().any()] if len(task_runs) else []
    st.subheader(f"Runs of {task}")
    summary_cols = ["run_name", "algo", "status", "start_time"] + [k for k in read_mlflow.PREFERRED_METRICS if k in task_metric_keys]
    st.dataframe(task_runs[summary_cols], hide_index=True)

    run_labels = {r.run_id: f"{r.run_name} ({r.algo})" for r in task_runs.itertuples()}
    step_units = {r.run_id: read_mlflow.step_unit(r.algo) for r in task_runs.itertuples()}
    selected = st.multiselect("Compare runs", list(run_labels), default=list(run_labels)[:8], format_func=run_labels.get, key="runs")
    if not selected:
        st.info("Pick runs to compare.")
        st.stop()

    success_key = next((k for k in ("eval/success_rate", "eval/success_once_rate") if k in task_metric_keys), None)
    if success_key:
        # Latest evaluated success rate of each compared run, as plain numbers at the top.
        cols = st.columns(min(len(selected), 4))
        latest = task_runs.set_index("run_id")[success_key]
        for i, run_id in enumerate(selected):
            value = latest.get(run_id)
            cols[i % len(cols)].metric(f"{run_labels[run_id]} · {success_key}", "n/a" if value is None or value != value else f"{value:.2f}")

    default_metrics = [k for k in read_mlflow.PREFERRED_METRICS if k in task_metric_keys] or task_metric_keys[:3]
    metrics = st.multiselect("Metrics", task_metric_keys, default=default_metrics, key="metrics")
    histories = _histories(uri, tuple(selected), tuple(metrics))
    cols = st.columns(2)
    for i, metric in enumerate(metrics):
        with cols[i % 2]:
            st.plotly_chart(figures.learning_curves(histories, metric, run_labels, step_units), key=f"curve-{metric}")

    st.subheader("Parameters side by side")
    params = _params(uri, tuple(selected), tuple(run_labels.items()))
    only_diff = st.toggle("Only parameters that differ", value=len(selected) > 1, key="only_diff")
    st.dataframe(read_mlflow.differing_rows(params) if only_diff else params)
