# Stub for the side environment only: Visuomotor imports these names at module import time but its
# forward never calls them (FrameMiners does); pytorch3d has no wheel on PyPI.
def quaternion_to_matrix(*a, **k):
    raise NotImplementedError("pytorch3d stub")
def matrix_to_quaternion(*a, **k):
    raise NotImplementedError("pytorch3d stub")
