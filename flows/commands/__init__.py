"""``ms2`` sub-commands, one module per area. Each module defines ``register(app)``.

Modules must keep heavy imports (torch, simulator, prefect, mlflow) inside the
command functions so ``ms2 --help`` stays instant.
"""

# Listed here so flows.cli registers them in this order in `ms2 --help`.
COMMAND_MODULES: list[str] = [
    "pipeline",
    "demos",
    "render",
    "validate",
    "train",
    "evaluate",
    "dashboard",
    "runtime",
]
