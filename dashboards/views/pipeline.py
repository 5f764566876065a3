"""Pipeline status page: the latest Prefect flow runs and their states, from the Prefect REST API."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import sources
from dashboards.read_prefect import RUN_COLUMNS, latest_flow_runs

STATE_ICONS = {"COMPLETED": "✅", "FAILED": "❌", "CRASHED": "💥", "RUNNING": "🏃", "SCHEDULED": "🕒", "PENDING": "⏳", "CANCELLED": "🚫", "PAUSED": "⏸️"}

st.title("Pipeline status")
api_url, configured = sources.prefect_api_url()
status = latest_flow_runs(api_url)
if not status.reachable:
    how = "PREFECT_API_URL" if configured else "the local-server default (PREFECT_API_URL is not set)"
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
    col.metric(f"{STATE_ICONS.get(state, '')} {state.lower()}", count)
table = pd.DataFrame(status.runs, columns=RUN_COLUMNS)
table["state"] = [f"{STATE_ICONS.get(s, '')} {s}" for s in table["state"]]
st.dataframe(table, hide_index=True)
