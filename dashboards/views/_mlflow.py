"""The MlflowClient the pages share: one per tracking URI for the whole Streamlit server."""

from __future__ import annotations

import streamlit as st

from dashboards import read_mlflow


@st.cache_resource(show_spinner=False)
def client(uri: str):
    return read_mlflow.client_for(uri)
