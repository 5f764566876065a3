"""The one pool of simulator worker processes: rollout, evaluation, demo generation and replay use it.

``SimPool`` (pool.py) starts workers (``python -m ms2core.workers.worker``, worker.py) with this or
another interpreter (interpreter.py: ``sim_python`` / ``$MS2FLOW_SIM_PYTHON``) and talks to them in a
wire format that does not depend on either side's Python or numpy version (wire.py). Rendering
datasets uses Dask workers instead (pipelines/render.py); both keep envs in ``ms2core.envs.cache``.
"""

from ms2core.workers.interpreter import ENV_VAR, check_interpreter, requirements, resolve_sim_python
from ms2core.workers.pool import SimPool, WorkerError

__all__ = ["ENV_VAR", "SimPool", "WorkerError", "check_interpreter", "requirements", "resolve_sim_python"]
