"""``ms2 render`` (demos -> Zarr dataset, in parallel with Dask) and ``ms2 export-h5`` (-> ManiSkill2-Learn HDF5)."""

from __future__ import annotations

from pathlib import Path

import typer


RENDER_FIELDS = {"source": "source", "obs_mode": "options.obs.obs_mode", "output_dir": "output_dir", "store": "store",
                 "workers": "workers", "scheduler": "scheduler", "max_episodes": "options.max_episodes",
                 "overwrite": "overwrite", "force": "force"}
EXPORT_FIELDS = {"store": "store", "output": "output", "overwrite": "overwrite"}


def register(app: typer.Typer) -> None:
    @app.command()
    def render(
        ctx: typer.Context,
        source: Path = typer.Argument(..., help="control-mode demo pair (NAME.h5 beside NAME.json)"),
        config: Path | None = typer.Option(None, "--config", "-c", help="YAML render config (configs/render/*.yaml)"),
        overrides: list[str] = typer.Option([], "--set", help="dotted override, e.g. options.obs.n_points=2048"),
        obs_mode: str | None = typer.Option(None, help="state | pointcloud | rgbd"),
        output_dir: str | None = typer.Option(None, help="directory or s3://bucket/prefix for the versioned store"),
        store: str | None = typer.Option(None, help="explicit store path/URL"),
        workers: int | None = typer.Option(None, help="Dask LocalCluster workers (0: render in this process)"),
        scheduler: str | None = typer.Option(None, help="existing Dask scheduler, tcp://host:port"),
        max_episodes: int | None = typer.Option(None, help="render only the first N trajectories"),
        overwrite: bool = typer.Option(False, help="replace a store at this path holding a different dataset"),
        force: bool = typer.Option(False, "--force", help="render a demo pair that fails the demo-pair checks "
                                   "(recorded in the manifest)"),
    ) -> None:
        """Render demos into a Zarr v3 dataset (resumable; same inputs and options -> nothing to do)."""
        from flows.commands._output import console as make_console

        from flows.commands._options import config_from_cli
        from pipelines import render as render_stage
        from storage_schemas.dataset import RenderConfig

        cfg = config_from_cli(ctx, RenderConfig, config, overrides, RENDER_FIELDS)
        result = render_stage.run(cfg)
        console = make_console()
        if result.nothing_to_do:
            console.print(f"[green]up to date:[/green] {result.store} (version {result.dataset_version}, "
                          f"{result.n_episodes} episodes, {result.n_rows} transitions)")
            return
        fps = f", {result.frames_per_s:.1f} frames/s" if result.frames_per_s else ""
        console.print(f"[green]rendered[/green] {result.store} (version {result.dataset_version}): "
                      f"{result.n_episodes} episodes, {result.n_rows} transitions, {result.ranges_rendered} ranges "
                      f"rendered, {result.ranges_reused} reused"
                      + (f", {result.episodes_kept} episodes kept from the interrupted run" if result.episodes_kept else "")
                      + f", {result.elapsed_s:.1f} s{fps}")

    @app.command("export-h5")
    def export_h5(
        ctx: typer.Context,
        store: str = typer.Argument(..., help="rendered Zarr dataset (path or s3:// URL)"),
        output: Path = typer.Argument(..., help="HDF5 file to write (ManiSkill2-Learn layout)"),
        overrides: list[str] = typer.Option([], "--set", help="e.g. storage_options.endpoint_url=http://..."),
        overwrite: bool = typer.Option(False, help="replace an existing output file"),
    ) -> None:
        """Write a dataset in ManiSkill2-Learn's converted-demo HDF5 layout (gzip)."""
        from flows.commands._output import console as make_console

        from flows.commands._options import config_from_cli
        from pipelines import export
        from storage_schemas.dataset import ExportConfig

        result = export.run(config_from_cli(ctx, ExportConfig, None, overrides, EXPORT_FIELDS))
        make_console().print(f"[green]wrote[/green] {result.output}: {result.n_episodes} episodes, "
                        f"{result.n_rows} transitions, {result.bytes / 2**20:.1f} MiB")
