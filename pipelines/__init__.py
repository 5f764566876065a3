"""Pipeline stages: one module per stage, each a plain idempotent ``run(cfg) -> result``.

No Prefect or MLflow here (flows/ wraps these), so every stage runs and tests
as a plain function.
"""

import ms2core  # noqa: F401 - first, so the OpenBLAS kernel is pinned before numpy loads (ms2core.numerics)
