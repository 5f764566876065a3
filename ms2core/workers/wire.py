"""The wire between the pool and its simulator workers: a JSON header plus raw array buffers.

Nothing here is pickle, so the two ends may run different Pythons and numpy
versions (a learner on 3.12 + numpy 2, workers in the 3.11 simulator runtime).
One frame::

    u32 header length | header (UTF-8 JSON) | buffer 0 | buffer 1 | ...

The header is ``{"body": <tree>, "sizes": [n0, n1, ...]}``; buffer ``i`` is
``sizes[i]`` raw bytes. The tree is JSON with a few tagged objects (a dict
with one ``~`` key):

=============  ======================================================  ============================
tag            value                                                   Python value
=============  ======================================================  ============================
``~a``         ``[buffer index, dtype.str, shape]`` (``~0d``: scalar)  numpy array / numpy scalar
``~b``         buffer index                                            bytes
``~t``         list                                                    tuple
``~d``         ``[[key, value], ...]``                                 dict with non-str keys
``~p``         str                                                     pathlib.Path
``~m``         ``["module:Class", model_dump_json]``                   pydantic model
``~c``         ``["module:Class", {field: value}]``                    dataclass instance
``~g``         ``[bit generator name, state]``                         numpy.random.Generator
``~r``         ``"module:qualname"``                                   module-level function/class
``~o``         ``["module:Class", state]``                             other object (its
                                                                       ``__getstate__`` /
                                                                       ``__setstate__``, as pickle)
=============  ======================================================  ============================

Arrays travel as their bytes with an explicit dtype string (``"<f4"``,
``"|b1"``...) and shape, so they decode bit for bit on any numpy. Objects are
named by import path: both ends run the same ms2flow code.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import os
import struct
import types
from pathlib import PurePath
from typing import Any

import numpy as np

HEADER = struct.Struct(">I")
MAX_HEADER_BYTES = 1 << 30


class WireError(RuntimeError):
    """A value cannot be sent to (or was not understood from) a simulator worker."""


# --------------------------------------------------------------------------- encode / decode a tree
def ref_of(obj) -> str:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise WireError(f"{obj!r} has no import path (a lambda or a local function/class cannot cross to a "
                        "simulator worker); define it at module level")
    return f"{module}:{qualname}"


def resolve(ref: str):
    module, _, qualname = ref.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def encode(value: Any, buffers: list) -> Any:
    """The JSON tree of ``value``; array and bytes payloads are appended to ``buffers``."""
    if value is None or isinstance(value, (bool, int, float, str)) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.fields is not None:
            raise WireError(f"arrays of dtype {value.dtype} cannot cross to a simulator worker")
        buffers.append(np.ascontiguousarray(value).data.cast("B") if value.size else b"")
        return {"~a": [len(buffers) - 1, value.dtype.str, list(value.shape)]}
    if isinstance(value, np.generic):
        buffers.append(np.asarray(value).tobytes())
        return {"~0d": [len(buffers) - 1, value.dtype.str]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        buffers.append(bytes(value))
        return {"~b": len(buffers) - 1}
    if isinstance(value, list):
        return [encode(v, buffers) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {"~t": [encode(v, buffers) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("~") for k in value):
            return {k: encode(v, buffers) for k, v in value.items()}
        return {"~d": [[encode(k, buffers), encode(v, buffers)] for k, v in value.items()]}
    if isinstance(value, PurePath):
        return {"~p": str(value)}
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return {"~r": ref_of(value)}
    if hasattr(value, "model_dump_json") and hasattr(type(value), "model_validate_json"):
        return {"~m": [ref_of(type(value)), value.model_dump_json()]}
    if dataclasses.is_dataclass(value):
        fields = {f.name: encode(getattr(value, f.name), buffers) for f in dataclasses.fields(value)}
        return {"~c": [ref_of(type(value)), fields]}
    if isinstance(value, np.random.Generator):
        bit_generator = value.bit_generator
        return {"~g": [type(bit_generator).__name__, encode(bit_generator.state, buffers)]}
    if isinstance(value, enum.Enum):
        return {"~o": [ref_of(type(value)), encode(value.value, buffers)]}
    state = value.__getstate__() if hasattr(value, "__getstate__") else vars(value)
    return {"~o": [ref_of(type(value)), encode(state, buffers)]}


def decode(tree: Any, buffers: list[memoryview]) -> Any:
    if isinstance(tree, list):
        return [decode(v, buffers) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        ((tag, arg),) = tree.items()
        if tag.startswith("~"):
            return _DECODERS[tag](arg, buffers)
    return {k: decode(v, buffers) for k, v in tree.items()}


def _decode_array(arg, buffers):
    index, dtype, shape = arg
    # A copy: the frame's bytes are not kept alive (and the array is writable, as an unpickled one is).
    return np.frombuffer(buffers[index], dtype=np.dtype(dtype)).reshape(shape).copy()


def _decode_object(arg, buffers):
    cls, state = resolve(arg[0]), decode(arg[1], buffers)
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls(state)
    obj = cls.__new__(cls)
    if hasattr(obj, "__setstate__"):
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)
    return obj


def _decode_dataclass(arg, buffers):
    cls, fields = resolve(arg[0]), decode(arg[1], buffers)
    obj = cls.__new__(cls)
    for name, v in fields.items():
        object.__setattr__(obj, name, v)  # frozen dataclasses too, without running __init__ twice
    return obj


def _decode_generator(arg, buffers):
    bit_generator = getattr(np.random, arg[0])()
    bit_generator.state = decode(arg[1], buffers)
    return np.random.Generator(bit_generator)


_DECODERS = {
    "~a": _decode_array,
    "~0d": lambda arg, b: np.frombuffer(b[arg[0]], dtype=np.dtype(arg[1]))[0],
    "~b": lambda arg, b: bytes(b[arg]),
    "~t": lambda arg, b: tuple(decode(v, b) for v in arg),
    "~d": lambda arg, b: {decode(k, b): decode(v, b) for k, v in arg},
    "~p": lambda arg, b: __import__("pathlib").Path(arg),
    "~m": lambda arg, b: resolve(arg[0]).model_validate_json(arg[1]),
    "~c": _decode_dataclass,
    "~g": _decode_generator,
    "~r": lambda arg, b: resolve(arg),
    "~o": _decode_object,
}


# --------------------------------------------------------------------------- frames on file descriptors
_IOV_MAX = 512  # below Linux's 1024 iovecs per writev


def write_frame(fd: int, message: Any) -> None:
    buffers: list = []
    body = encode(message, buffers)
    views = [memoryview(b).cast("B") for b in buffers]
    header = json.dumps({"body": body, "sizes": [v.nbytes for v in views]}).encode()
    _write_all(fd, [memoryview(HEADER.pack(len(header)) + header), *views])


def _write_all(fd: int, views: list[memoryview]) -> None:
    """All of ``views`` in as few system calls as the pipe allows (one writev each, partial writes resumed)."""
    views = [v for v in views if v.nbytes]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first:first + _IOV_MAX])
        while first < len(views) and written >= views[first].nbytes:
            written -= views[first].nbytes
            first += 1
        if written:
            views[first] = views[first][written:]


def read_frame(fd: int) -> Any:
    """The next message on ``fd``; EOFError when the other end closed (a clean end or a death)."""
    (length,) = HEADER.unpack(_read_exact(fd, HEADER.size))
    if length > MAX_HEADER_BYTES:
        raise WireError(f"frame header of {length} bytes: the stream is not a simulator worker's wire")
    header = json.loads(_read_exact(fd, length))
    data = memoryview(_read_exact(fd, sum(header["sizes"])))  # every buffer of the frame in one read
    buffers, at = [], 0
    for n in header["sizes"]:
        buffers.append(data[at:at + n])
        at += n
    return decode(header["body"], buffers)


def _read_exact(fd: int, n: int) -> bytearray:
    out = bytearray(n)
    view, got = memoryview(out), 0
    while got < n:
        chunk = os.readv(fd, [view[got:]])
        if chunk == 0:
            raise EOFError(f"stream closed after {got} of {n} bytes")
        got += chunk
    return out
