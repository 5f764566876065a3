# Stub for the side environment only: ML2L's checkpoint_utils imports torchvision just to resolve
# torchvision:// model-zoo URLs. PyPI's torchvision wheels fail against the CPU torch 2.13 build
# ("operator torchvision::nms does not exist").
from . import models  # noqa: F401
