# Stub for the side environment only: ML2L's lib3d package imports open3d at module import time for
# mesh/point-cloud visualisation helpers; the pose helpers the observation wrapper uses are numpy and
# sapien only. Any open3d attribute is a placeholder that fails when actually used.
class _Placeholder:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"open3d stub: {self._name} called")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Placeholder(f"open3d.{name}")
