"""Entry script of the dashboard (``ms2 dashboard`` runs it with Streamlit): page set-up and navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"

st.set_page_config(page_title="ms2flow", page_icon=":material/precision_manufacturing:", layout="wide")
# The datasets page is the default, so it lives at "/" (default pages take no url_path).
page = st.navigation([
    st.Page(VIEWS / "datasets.py", title="Datasets", icon=":material/dataset:", default=True),
    st.Page(VIEWS / "training.py", title="Training", icon=":material/show_chart:", url_path="training"),
    st.Page(VIEWS / "models.py", title="Models", icon=":material/emoji_events:", url_path="models"),
    st.Page(VIEWS / "pipeline.py", title="Pipeline status", icon=":material/account_tree:", url_path="pipeline"),
])
st.sidebar.caption("ms2flow dashboard · data: reads only")
page.run()
