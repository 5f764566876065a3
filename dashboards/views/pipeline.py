"""Pipeline status page: the latest Prefect flow runs and their states, from the Prefect REST API."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import sources
from dashboards.read_prefect import RUN_COLUMNS, latest_flow_runs

STATE_COLORS = {"COMPLETED": "green", "FAILED": "red", "CRASHED": "red", "RUNNING": "blue", "SCHEDULED": "gray", "PENDING": "gray", "CANCELLED": "orange", "PAUSED": "orange"}


def render() -> None:
    st.title("Pipeline status")
    api_url, configured = sources.prefect_api_url()
    status = latest_flow_runs(api_url)
    if not status.reachable:
        how = "from PREFECT_API_URL" if configured else "the local-server default (PREFECT_API_URL is not set)"
        st.warning(
            f"Prefect API not reachable at {api_url} ({how}): {status.error}.\n\n"
            "Flow runs are listed once a Prefect server is up: `prefect server start`, then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` before `ms2 dashboard`."
        )
        st.stop()

    st.caption(f"Prefect API: `{api_url}` · latest {len(status.runs)} flow runs")
    if not status.runs:
        st.info("No flow runs yet.")
        st.stop()
    counts = status.state_counts
    cols = st.columns(max(len(counts), 1))
    for col, (state, count) in zip(cols, sorted(counts.items())):
        col.metric(state.lower(), count)
    st.markdown(" ".join(f":{STATE_COLORS.get(r['state'], 'gray')}-badge[{r['flow']} · {r['name']}: {r['state']}]" for r in status.runs[:10]))
    st.dataframe(pd.DataFrame(status.runs, columns=RUN_COLUMNS), hide_index=True)
