# Stub for the side environment only: ML2L's cuda_utils calls nvmlInit() at import time and exits
# the process unless it succeeds; this CPU-only machine has no NVML library. GPU queries are never made.
class NVMLError_DriverNotLoaded(Exception):
    pass


def nvmlInit():
    return None


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(f"pynvml stub: {name}")
