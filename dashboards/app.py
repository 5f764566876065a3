"""Entry script of the dashboard (``ms2 dashboard`` runs it with Streamlit): page set-up and navigation.

Pages are plain modules under dashboards/views, each with a ``render()``, so
importing them (tests, import-linter) runs nothing; Streamlit executes this
file as ``__main__``.
"""

from __future__ import annotations

import streamlit as st

from dashboards.views import datasets, models, pipeline, training


def main() -> None:
    st.set_page_config(page_title="ms2flow", page_icon=":material/precision_manufacturing:", layout="wide")
    # The datasets page is the default, so it lives at "/".
    page = st.navigation([
        st.Page(datasets.render, title="Datasets", icon=":material/dataset:", url_path="datasets", default=True),
        st.Page(training.render, title="Training", icon=":material/show_chart:", url_path="training"),
        st.Page(models.render, title="Models", icon=":material/emoji_events:", url_path="models"),
        st.Page(pipeline.render, title="Pipeline status", icon=":material/account_tree:", url_path="pipeline"),
    ])
    st.sidebar.caption("ms2flow dashboard · reads only")
    page.run()


if __name__ == "__main__":
    main()
