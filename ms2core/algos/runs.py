"""Run directories: every training run writes into its own new directory, never into another run's files.

    $MS2FLOW_DATA_DIR/runs/<algo>/<task>/<run name>/<run id>/    one run (run id: UTC time + random suffix)
        config.yaml | resolved_config.json                      the resolved config (run dir included)
        metrics.jsonl                                            appended to by a resumed run
        checkpoints/ckpt_*.pt, checkpoints/final.pt  (BC)  |  checkpoint.pt  (online RL)
        train_result.json                                        written last: the run finished
        failure.json                                             why it stopped (diverged, disk full, ...)

Rules (``claim_run_dir``): without ``run_dir`` a fresh run gets a new ``<run id>`` directory; an identical
rerun (same resolved config, same validated inputs, finished) returns the finished run instead
(``find_completed``). ``--resume-from CKPT`` continues in the checkpoint's own run directory. An explicit
``run_dir`` that already holds a run is refused unless ``overwrite``; then the old run is moved aside
(``.<name>.replaced-<run id>``) and deleted only once the new one finished, or put back if it fails.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ms2core.errors import ConfigError

#: files or folders whose presence means a directory holds (part of) a run
RUN_MARKERS = ("train_result.json", "resolved_config.json", "config.yaml", "metrics.jsonl", "checkpoints",
               "checkpoint.pt", "failure.json")
FAILURE_FILE = "failure.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def run_label(cfg) -> str:
    """The human part of a run's name: BC's run.run_name, online RL's seed<seed>."""
    return getattr(cfg.run, "run_name", None) or f"seed{cfg.run.seed}"


def explicit_run_dir(cfg) -> Path | None:
    return Path(cfg.run.run_dir) if cfg.run.run_dir else None


def run_group_dir(algo: str, cfg) -> Path:
    """$MS2FLOW_DATA_DIR/runs/<algo>/<task>/<run name>: the runs of one name, one subdirectory each."""
    from ms2core.algos import task_of
    from ms2core.paths import runs_dir

    return runs_dir() / algo / task_of(cfg) / run_label(cfg)


def with_run_dir(cfg, run_dir: Path):
    """The config with its run directory set (run.run_dir)."""
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(run_dir)})})


def identity(cfg) -> dict:
    """The resolved config without where the run lives and how it was started: equal identities and equal
    inputs mean the same training."""
    return identity_of_dump(cfg.model_dump(mode="json"))


def identity_of_dump(dump: dict) -> dict:
    out = json.loads(json.dumps(dump))
    if isinstance(out.get("run"), dict):
        for key in ("run_dir", "resume_from", "overwrite"):
            out["run"].pop(key, None)
    if isinstance(out.get("rollout"), dict):  # where simulator workers run does not change what is learned
        out["rollout"].pop("sim_python", None)
    return out


def run_dir_of_checkpoint(checkpoint: str | Path) -> Path | None:
    """The run a checkpoint belongs to (BC: <run>/checkpoints/x.pt; online RL: <run>/checkpoint.pt)."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run if holds_run(run) else None


def find_completed(algo: str, cfg, inputs: dict[str, str | None]):
    """The saved TrainResult of a finished run with this identity and these validated inputs, if any."""
    from storage_schemas.training import BC_RENAMED_KEYS, TrainResult, upgrade_renamed_keys

    explicit = explicit_run_dir(cfg)
    group = run_group_dir(algo, cfg)
    candidates = [explicit] if explicit else (sorted(group.iterdir(), reverse=True) if group.is_dir() else [])
    want = identity(cfg)
    for run_dir in candidates:
        result_path, config_path = run_dir / "train_result.json", run_dir / "resolved_config.json"
        if not (result_path.is_file() and config_path.is_file()) or (run_dir / FAILURE_FILE).exists():
            continue
        try:
            saved = json.loads(config_path.read_text())
            if algo == "bc":  # a run of an ms2flow before the shared run/net sections
                saved = upgrade_renamed_keys(saved, BC_RENAMED_KEYS)
            result = TrainResult.model_validate_json(result_path.read_text())
        except ValueError:
            continue
        if identity_of_dump(saved) != want or result.inputs != inputs:
            continue
        if result.final_checkpoint and Path(result.final_checkpoint).exists():
            return result.model_copy(update={"skipped": True})
    return None


@dataclass
class RunDirClaim:
    """Where this run writes, and what to do when it ends."""

    path: Path
    fresh: bool                      # created for this run (removed again if it fails before any checkpoint)
    displaced: Path | None = None    # the old run an --overwrite moved aside (deleted on success, restored on failure)
    metrics_bytes_at_start: int = field(init=False, default=0)  # metrics.jsonl's size when claimed

    def __post_init__(self):
        self.metrics_bytes_at_start = self._metrics_bytes()

    def _metrics_bytes(self) -> int:
        metrics = self.path / "metrics.jsonl"
        return metrics.stat().st_size if metrics.is_file() else 0

    def succeeded(self) -> None:
        (self.path / FAILURE_FILE).unlink(missing_ok=True)
        if self.displaced is not None:
            shutil.rmtree(self.displaced, ignore_errors=True)

    def failed(self, failure: dict, record: bool, keep: bool = False) -> None:
        """A failed run: an overwritten run comes back; a fresh run that wrote neither a checkpoint nor a
        metric (it failed before training: a refused config, checkpoint or dataset) is removed (unless
        ``keep``: a diverged run keeps its record); otherwise, with ``record`` or once this attempt logged
        metrics, failure.json says why, next to the metrics of what it did (a crash after an hour of
        training, or of a resumed curve whose next checkpoint was not reached yet, is not erased). A refused
        resume leaves its run untouched."""
        from ms2core.fileio import write_text_atomic

        has_checkpoint = any(self.path.glob("checkpoints/ckpt_*.pt")) or (self.path / "checkpoint.pt").exists()
        progressed = self._metrics_bytes() > self.metrics_bytes_at_start  # this attempt trained (and logged)
        if self.displaced is not None or (self.fresh and not (keep or has_checkpoint or progressed)):
            shutil.rmtree(self.path, ignore_errors=True)
            if self.displaced is not None:
                self.displaced.rename(self.path)
            return
        if record or keep or progressed:  # an error after training started is the run's failure, whatever it is
            try:
                write_text_atomic(self.path / FAILURE_FILE, json.dumps(failure, indent=2))
            except OSError:
                pass  # a full disk: the error itself says so


def claim_run_dir(algo: str, cfg, resume_from: str | None, overwrite: bool) -> RunDirClaim:
    """Decide the run directory (see the module docstring); raises ConfigError for a taken explicit one."""
    explicit = explicit_run_dir(cfg)
    if resume_from is not None:
        own = run_dir_of_checkpoint(resume_from)
        if explicit is None or (own is not None and explicit.resolve() == own):
            if own is not None:
                return RunDirClaim(own, fresh=False)
    if explicit is None:
        path = run_group_dir(algo, cfg) / new_run_id()
        path.mkdir(parents=True, exist_ok=False)
        return RunDirClaim(path, fresh=True)
    if not holds_run(explicit):
        explicit.mkdir(parents=True, exist_ok=True)
        return RunDirClaim(explicit, fresh=True)
    if not overwrite:
        raise ConfigError(
            f"run.run_dir={str(explicit)!r} already holds a run ({', '.join(m for m in RUN_MARKERS if (explicit / m).exists())})",
            hint="drop run_dir to get a new run directory, choose another one, continue that run with "
                 "--resume-from <its checkpoint>, or pass --overwrite to replace it (the old run is kept until "
                 "the new one finished)")
    displaced = explicit.with_name(f".{explicit.name}.replaced-{new_run_id()}")
    explicit.rename(displaced)
    explicit.mkdir(parents=True)
    return RunDirClaim(explicit, fresh=True, displaced=displaced)
