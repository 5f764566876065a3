"""Entry script of the dashboard (``ms2 dashboard`` runs it with Streamlit): page set-up and navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"

st.set_page_config(page_title="ms2flow", page_icon="🤖", layout="wide")
page = st.navigation([
    st.Page(VIEWS / "datasets.py", title="Datasets", icon="🗂️", url_path="datasets", default=True),
    st.Page(VIEWS / "training.py", title="Training", icon="📈", url_path="training"),
    st.Page(VIEWS / "models.py", title="Models", icon="🏆", url_path="models"),
    st.Page(VIEWS / "pipeline.py", title="Pipeline status", icon="🔁", url_path="pipeline"),
])
st.sidebar.caption("ms2flow dashboard · data: reads only")
page.run()
