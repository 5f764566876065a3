"""Plotly figures of the dashboard (pure functions of arrays and tables, so tests can check them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SEGMENT_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
NO_SEGMENT_COLOR = "#c8c8c8"
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")


def point_cloud(xyz: np.ndarray, rgb: np.ndarray | None, seg: np.ndarray | None, color_by: str, title: str = "") -> go.Figure:
    """3D scatter of (n, 3) points coloured by their rgb or by segmentation label (-1 = none)."""
    if color_by == "segmentation" and seg is not None:
        colors = [SEGMENT_COLORS[s % len(SEGMENT_COLORS)] if s >= 0 else NO_SEGMENT_COLOR for s in seg.tolist()]
        hover = [f"segment {s}" if s >= 0 else "no segment" for s in seg.tolist()]
    elif rgb is not None:
        colors = [f"rgb({r},{g},{b})" for r, g, b in rgb.astype(int).tolist()]
        hover = None
    else:
        colors, hover = "#1f77b4", None
    fig = go.Figure(
        go.Scatter3d(
            x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers",
            marker=dict(size=2, color=colors), text=hover, hoverinfo="x+y+z+text" if hover else "x+y+z",
        )
    )
    fig.update_layout(
        title=title, height=520, scene=dict(aspectmode="data", xaxis_title="x (m)", yaxis_title="y (m)", zaxis_title="z (m)"),
        **_LAYOUT,
    )
    return fig


def depth_image(depth: np.ndarray, title: str) -> go.Figure:
    valid = depth[np.isfinite(depth) & (depth > 0)]
    zmax = float(np.percentile(valid, 99)) if valid.size else 1.0
    fig = go.Figure(go.Heatmap(z=depth, colorscale="Viridis", zmin=0, zmax=zmax, colorbar=dict(title="m")))
    fig.update_layout(title=title, height=320, **_LAYOUT)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return fig


def episode_timeseries(actions: np.ndarray | None, rewards: np.ndarray | None, success: np.ndarray | None, step: int | None = None) -> go.Figure:
    """Actions (one line per dimension) above rewards and success, over the episode's steps."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=("actions", "reward and success"))
    if actions is not None:
        steps = np.arange(len(actions))
        for dim in range(actions.shape[1]):
            fig.add_trace(go.Scatter(x=steps, y=actions[:, dim], mode="lines", name=f"a[{dim}]", legendgroup="actions"), row=1, col=1)
    if rewards is not None:
        fig.add_trace(go.Scatter(x=np.arange(len(rewards)), y=rewards, mode="lines", name="reward", line=dict(color="black")), row=2, col=1)
    if success is not None:
        fig.add_trace(
            go.Scatter(x=np.arange(len(success)), y=success.astype(float), mode="lines", name="success",
                       line=dict(color="#2ca02c", dash="dot", shape="hv")),
            row=2, col=1,
        )
    if step is not None:
        fig.add_vline(x=step, line=dict(color="#d62728", width=1))
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(height=480, **_LAYOUT)
    return fig


def learning_curves(histories: pd.DataFrame, metric: str, labels: dict[str, str],
                    units: dict[str, str] | None = None) -> go.Figure:
    """One line per run for one metric vs its logged step, whose meaning ``units`` gives per run (BC logs by
    update, the RL algorithms by env step: read_mlflow.step_unit). Runs of different units on one figure
    name their unit in the legend and the axis."""
    units = units or {}
    rows_of = list(histories[histories["metric"] == metric].groupby("run_id", sort=False))
    shown = list(dict.fromkeys(units.get(run_id, "step") for run_id, _ in rows_of)) or ["step"]
    fig = go.Figure()
    for run_id, rows in rows_of:
        name = labels.get(run_id, run_id) + (f" [{units.get(run_id, 'step')}]" if len(shown) > 1 else "")
        fig.add_trace(go.Scatter(x=rows["step"], y=rows["value"], mode="lines+markers", marker=dict(size=4), name=name))
    fig.update_layout(title=metric, height=340, xaxis_title=" / ".join(shown), legend=dict(orientation="h", y=-0.25),
                      **_LAYOUT)
    return fig


def success_rate_by_version(versions: list[str], rates: list[float | None], champion: str | None) -> go.Figure:
    colors = ["#2ca02c" if v == champion else "#1f77b4" for v in versions]
    fig = go.Figure(go.Bar(x=[f"v{v}" for v in versions], y=[r if r is not None else 0 for r in rates], marker_color=colors,
                           text=[f"{r:.2f}" if r is not None else "n/a" for r in rates], textposition="outside"))
    fig.update_layout(title="evaluated success rate by version (green = champion)", height=300, yaxis=dict(range=[0, 1.1]), **_LAYOUT)
    return fig
