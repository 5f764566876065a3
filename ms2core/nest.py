"""Nested observation arrays (dicts of numpy arrays / torch tensors) via optree.

A "nest" is any optree pytree whose leaves are arrays: the processed-observation
dict ``{"xyz": ..., "rgb": ..., "state": ...}``, a batch dataclass's fields, or
lists of them. These few functions replace ManiSkill2-Learn's DictArray class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optree
import torch

Nest = Any

_NONE_IS_LEAF = False


def map_nest(fn: Callable, nest: Nest, *rest: Nest) -> Nest:
    """Apply ``fn`` to every leaf (and the matching leaves of ``rest``), keeping the structure."""
    return optree.tree_map(fn, nest, *rest, none_is_leaf=_NONE_IS_LEAF)


def leaves(nest: Nest) -> list:
    return optree.tree_leaves(nest, none_is_leaf=_NONE_IS_LEAF)


def to_torch(nest: Nest, device: str | torch.device | None = None, float_dtype: torch.dtype | None = None,
             non_blocking: bool = False) -> Nest:
    """numpy -> torch (zero-copy on CPU where possible); floats optionally cast to ``float_dtype``."""

    def convert(x):
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if float_dtype is not None and t.is_floating_point():
            t = t.to(float_dtype)
        if device is not None:
            t = t.to(device, non_blocking=non_blocking)
        return t

    return map_nest(convert, nest)


def to_numpy(nest: Nest) -> Nest:
    """torch -> numpy (detached, on CPU); numpy leaves pass through."""

    def convert(x):
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            return x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()
        return np.asarray(x)

    return map_nest(convert, nest)


def to_device(nest: Nest, device: str | torch.device, non_blocking: bool = False) -> Nest:
    return map_nest(lambda t: t.to(device, non_blocking=non_blocking), nest)


def cast_floats(nest: Nest, dtype) -> Nest:
    """Cast floating leaves to ``dtype`` (numpy or torch dtype, matching the leaves); ints/bools untouched."""

    def cast(x):
        if isinstance(x, torch.Tensor):
            return x.to(dtype) if x.is_floating_point() else x
        x = np.asarray(x)
        return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x

    return map_nest(cast, nest)


def slice_nest(nest: Nest, index) -> Nest:
    """``leaf[index]`` for every leaf (int, slice, index array or boolean mask along the first axis)."""
    return map_nest(lambda x: x[index], nest)


def stack(nests: Sequence[Nest], axis: int = 0) -> Nest:
    """Stack nests of identical structure into one nest with a new axis."""
    return _combine(nests, np.stack, torch.stack, axis)


def concatenate(nests: Sequence[Nest], axis: int = 0) -> Nest:
    """Concatenate nests of identical structure along an existing axis."""
    return _combine(nests, np.concatenate, torch.cat, axis)


def _combine(nests: Sequence[Nest], np_fn, torch_fn, axis: int) -> Nest:
    if not nests:
        raise ValueError("cannot combine an empty list of nests")
    treedef = optree.tree_structure(nests[0], none_is_leaf=_NONE_IS_LEAF)
    for i, other in enumerate(nests[1:], start=1):
        other_def = optree.tree_structure(other, none_is_leaf=_NONE_IS_LEAF)
        if other_def != treedef:
            raise ValueError(f"nest {i} has structure {other_def}, expected {treedef}")
    columns = zip(*(optree.tree_leaves(n, none_is_leaf=_NONE_IS_LEAF) for n in nests))
    combined = []
    for column in columns:
        if isinstance(column[0], torch.Tensor):
            combined.append(torch_fn(list(column), dim=axis))
        else:
            combined.append(np_fn([np.asarray(c) for c in column], axis=axis))
    return optree.tree_unflatten(treedef, combined)


def batch_size(nest: Nest) -> int:
    """Length of the first axis, checked to agree across leaves."""
    sizes = {int(x.shape[0]) for x in leaves(nest)}
    if len(sizes) != 1:
        raise ValueError(f"leaves disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def nbytes(nest: Nest) -> int:
    total = 0
    for x in leaves(nest):
        total += x.numel() * x.element_size() if isinstance(x, torch.Tensor) else np.asarray(x).nbytes
    return total


def pin_memory(nest: Nest) -> Nest:
    return map_nest(lambda t: t.pin_memory(), nest)
