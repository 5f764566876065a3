"""Datasets page: every Zarr dataset with its manifest, latest validation report and an episode viewer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboards import figures, sources
from dashboards.read_datasets import (
    MAX_POINTS_DEFAULT,
    DatasetEntry,
    human_bytes,
    list_datasets,
    read_episode_series,
    read_frame,
    read_validation_report,
    summarize,
)


@st.cache_data(ttl=30, show_spinner=False)
def _summary(entry: DatasetEntry):
    return summarize(entry)


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def _series(entry: DatasetEntry, episode: int):
    return read_episode_series(entry, episode)


@st.cache_data(ttl=30, show_spinner=False, max_entries=256)
def _frame(entry: DatasetEntry, episode: int, step: int, max_points: int):
    return read_frame(entry, episode, step, max_points=max_points)


def _overview(entries) -> None:
    """One row per dataset: what it is and how much it holds (committed episodes only)."""
    overview = []
    for e in entries:
        s = _summary(e)
        rates = s.episode_success
        overview.append({
            "task": s.task, "dataset": e.name, "obs mode": s.obs_mode, "control mode": s.control_mode or "",
            "episodes": s.num_episodes, "transitions": s.num_transitions,
            "success at end": f"{rates.mean():.0%}" if rates is not None and len(rates) else "",
            "size": human_bytes(s.size_bytes),
        })
    st.dataframe(pd.DataFrame(overview), hide_index=True)


def render() -> None:
    st.title("Datasets")
    root = sources.datasets_dir()
    entries = list_datasets(root)
    if not entries:
        st.info(f"No datasets under `{root}`. Render one with `ms2 render ...` (datasets live in `datasets/<env_id>/<name>.zarr`).")
        st.stop()

    _overview(entries)

    labels = [e.label for e in entries]
    choice = st.selectbox("Dataset", labels, key="dataset", bind="query-params")
    entry = entries[labels.index(choice)]
    summary = _summary(entry)

    st.subheader(entry.label)
    st.markdown(
        f":blue-badge[task: {summary.task}] :violet-badge[obs mode: {summary.obs_mode}] "
        f":orange-badge[control mode: {summary.control_mode or 'not recorded'}]"
    )
    if summary.manifest_error:
        st.warning(f"Manifest not readable by this version: {summary.manifest_error}. The raw manifest is shown below.")
    rates = summary.episode_success
    cols = st.columns(4)
    cols[0].metric("Episodes", summary.num_episodes)
    cols[1].metric("Transitions", summary.num_transitions)
    cols[2].metric("Success at end", f"{rates.mean():.0%}" if rates is not None and len(rates) else "n/a")
    cols[3].metric("Size on disk", human_bytes(summary.size_bytes))

    tab_manifest, tab_validation, tab_viewer = st.tabs(["Manifest", "Validation", "Episode viewer"])

    with tab_manifest:
        _manifest_tab(summary)

    with tab_validation:
        _validation_tab(entry)

    with tab_viewer:
        if summary.num_episodes == 0:
            st.info("This dataset has no committed episodes yet.")
            st.stop()
        left, right = st.columns([1, 3])
        with left:
            episode = int(st.number_input("Episode", min_value=0, max_value=summary.num_episodes - 1, value=0, step=1, key="episode", bind="query-params"))
            length = int(summary.episode_lengths[episode])
            step = int(st.slider("Step", 0, max(length - 1, 0), 0, key="step")) if length > 1 else 0
            color_by, max_points = "rgb", MAX_POINTS_DEFAULT
            if "xyz" in summary.obs_keys:
                color_by = st.radio("Colour points by", ["rgb", "segmentation"], horizontal=True, key="color_by")
                max_points = int(st.select_slider("Max points drawn", [1000, 2000, 5000, 10000], value=MAX_POINTS_DEFAULT, key="max_points"))
        series = _series(entry, episode)
        ok = summary.episode_success
        with left:
            st.metric("Episode length", f"{series.length} steps")
            if ok is not None:
                st.metric("Episode success", "yes" if bool(ok[episode]) else "no")
            if series.rewards is not None:
                st.metric("Return", f"{float(np.sum(series.rewards)):.2f}")
        frame = _frame(entry, episode, step, max_points)
        with right:
            st.markdown(f"**Episode {episode}**, step {step} of {series.length} (transitions {series.start}–{series.end - 1})")
            if frame.xyz is not None:
                if color_by == "segmentation" and frame.point_seg is None:
                    st.caption("No segmentation in this dataset; colouring by rgb.")
                fig = figures.point_cloud(frame.xyz, frame.point_rgb, frame.point_seg, color_by,
                                          title=f"point cloud: {len(frame.xyz)} of {frame.num_points_total} points")
                st.plotly_chart(fig, key="pointcloud")
            cameras = list(dict.fromkeys([*frame.rgb_by_camera, *frame.depth_by_camera]))
            for name in cameras:
                c_rgb, c_depth = st.columns(2)
                if name in frame.rgb_by_camera:
                    c_rgb.image(frame.rgb_by_camera[name], caption=f"{name} rgb", width="stretch")
                if name in frame.depth_by_camera:
                    c_depth.plotly_chart(figures.depth_image(frame.depth_by_camera[name], f"{name} depth"), key=f"depth-{name}",
                                      config={"displayModeBar": False})
            if frame.xyz is None and not cameras:
                st.caption("State-only dataset: no images or point clouds to show.")
        st.plotly_chart(figures.episode_timeseries(series.actions, series.rewards, series.success, step), key="timeseries")


def _manifest_tab(summary) -> None:
    """The manifest as readable tables: identity, render options (one row each), package versions, arrays."""
    fields = summary.manifest_fields()
    if fields:
        st.dataframe(pd.DataFrame([{"field": k, "value": v} for k, v in fields.items()]), hide_index=True)
        left, right = st.columns([3, 2])
        left.markdown("**Render options**")
        left.dataframe(pd.DataFrame(summary.render_option_rows()), hide_index=True)
        right.markdown("**Versions**")
        right.dataframe(pd.DataFrame(summary.version_rows()), hide_index=True)
    arrays = [{"array": f"data/obs/{k}", "shape": str(shape), "dtype": dt} for k, (shape, dt) in summary.obs_keys.items()]
    arrays += [{"array": f"data/{k}", "shape": str(shape), "dtype": dt} for k, (shape, dt) in summary.other_arrays.items()]
    st.dataframe(pd.DataFrame(arrays), hide_index=True)
    with st.expander("Full manifest (JSON)", expanded=summary.manifest is None and bool(summary.raw_manifest)):
        st.json({k: v for k, v in summary.raw_manifest.items() if k != "inventory"})


def _validation_tab(entry) -> None:
    report = read_validation_report(entry)
    if report is None:
        st.info(f"No validation report for this dataset yet. Run `ms2 validate {entry.path}` (looked for "
                f"`{entry.path.parent / (entry.name + '.validation.json')}` and the store's `ms2flow_validation` attribute).")
        return
    if report.error:
        st.error(f"Validation report {report.source}: {report.error}")
        return
    c = st.columns(3)
    c[0].metric("Verdict", report.status or "?")
    c[1].metric("Errors", report.n_errors)
    c[2].metric("Warnings", report.n_warnings)
    st.caption(f"Report: {report.source}" + (f" · validated at {report.validated_at}" if report.validated_at else ""))
    if not report.full_report:
        st.caption("Only the summary recorded in the store; the full report (findings) is the JSON file "
                   "`ms2 validate` writes beside the dataset.")
    elif report.findings:
        st.dataframe(pd.DataFrame(report.findings), hide_index=True)
    else:
        st.success("No findings.")
    with st.expander("Full report (JSON)"):
        st.json(report.report)
