"""Pack a rendered point-cloud dataset into small parts for a machine reached through a size-capped channel,
and unpack the parts there into a Zarr store of the same layout.

Why: the lent GPU machine cannot run SAPIEN 2.2 (so it cannot render), and each call to it carries at most
64 MiB, while a 1000-demo PickCube point-cloud store is ~750 MB (float xyz compresses poorly: its low
mantissa bits are noise). PointNet-style encoders are invariant to the order of the points, so for transport
each frame's points are sorted along a Morton (Z-order) curve of their coordinates quantised to
``--quantum`` metres, and xyz is stored as int16 deltas between consecutive sorted points; rgb follows the
same order. That is ~3.3 KB a frame instead of ~9.7 KB (1200 points, 1 mm). Lossy only in xyz, by at most
quantum / 2 per coordinate; every other array (state, actions, episode_ends, ...) and the store's manifest
travel bit-exact. Stores are read through ``DatasetStore`` (committed episodes, verified chunks) and
written back through ``write_dataset`` (a new chunk inventory); the unpacked store records ``transport``
in its attributes and, having new xyz bytes, needs ``ms2 validate`` again.

    python scripts/ship_dataset.py pack STORE [STORE ...] --out .ship --part-mb 48
    python scripts/ship_dataset.py unpack .ship/part-000 [...] --out-dir /tmp/datasets

``pack`` writes ``<out>/part-NNN/part.npz`` (each at most ``--part-mb`` MB; one episode's arrays may span parts) and
``<out>/part-000/header.json``; ``unpack`` needs every part (it checks) and writes one store per packed store,
under its original name, into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numcodecs
import numpy as np
import zarr

from ms2core.data.store import DatasetStore
from ms2core.errors import DatasetError
from storage_schemas.dataset import MANIFEST_ATTR
from storage_schemas.validation import VALIDATION_ATTR

POINT_KEYS = ("data/obs/xyz", "data/obs/rgb")
FORMAT = "ms2flow-ship-1"


# --------------------------------------------------------------------------- point codec (pure)
def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 21 bits of each value (64-bit Morton helper)."""
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                        (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def morton_order(q: np.ndarray) -> np.ndarray:
    """Per-frame argsort of the Z-order codes of non-negative integer coordinates q: (T, N, 3)."""
    code = _spread_bits(q[..., 0]) | (_spread_bits(q[..., 1]) << np.uint64(1)) | (_spread_bits(q[..., 2]) << np.uint64(2))
    return np.argsort(code, axis=1, kind="stable")


def encode_points(xyz: np.ndarray, rgb: np.ndarray | None, quantum: float):
    """(T, N, 3) float xyz (+ uint8 rgb) -> (origin, planar int16 deltas (T, 3, N), planar sorted rgb or None)."""
    origin = xyz.reshape(-1, 3).min(0).astype(np.float64)
    q = np.rint((xyz - origin) / quantum).astype(np.int64)
    if q.max(initial=0) >= 2**15:
        raise ValueError(f"point coordinates span {q.max() * quantum:.2f} m: too wide for int16 deltas at "
                         f"quantum {quantum} m (expected < {2**15 * quantum:.1f} m)")
    order = morton_order(q)
    q = np.take_along_axis(q, order[..., None], axis=1)
    deltas = np.diff(q, axis=1, prepend=0).astype(np.int16).transpose(0, 2, 1)
    rgb_sorted = None if rgb is None else np.take_along_axis(rgb, order[..., None], axis=1).transpose(0, 2, 1)
    return origin, np.ascontiguousarray(deltas), None if rgb_sorted is None else np.ascontiguousarray(rgb_sorted)


def decode_points(origin: np.ndarray, deltas: np.ndarray, rgb_planar: np.ndarray | None, quantum: float,
                  dtype=np.float32):
    q = np.cumsum(deltas.astype(np.int64), axis=2).transpose(0, 2, 1)
    xyz = (q * quantum + origin).astype(dtype)
    rgb = None if rgb_planar is None else np.ascontiguousarray(rgb_planar.transpose(0, 2, 1))
    return xyz, rgb


# --------------------------------------------------------------------------- pack
def pack(stores: list[str], out: Path, part_mb: float, quantum: float, level: int) -> list[Path]:
    codec = numcodecs.Zstd(level=level)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: --out {out} exists and is not empty (expected a new or empty directory)")
    header = {"format": FORMAT, "quantum_m": quantum, "stores": []}
    parts: list[dict[str, np.ndarray]] = [{}]
    sizes = [0]
    limit = int(part_mb * 1e6)

    def put(key: str, payload: bytes) -> None:
        if sizes[-1] and sizes[-1] + len(payload) > limit:
            parts.append({})
            sizes.append(0)
        parts[-1][key] = np.frombuffer(payload, np.uint8)
        sizes[-1] += len(payload)

    for s, path in enumerate(stores):
        try:
            dataset = DatasetStore.open(path)  # committed episodes only, chunks verified
        except DatasetError as exc:
            raise SystemExit(f"error: {exc}") from exc
        if "obs/xyz" not in dataset.arrays:
            raise SystemExit(f"error: {path} is not a point-cloud dataset (expected data/obs/xyz)")
        ends = dataset.episode_ends
        committed = dataset.n_rows
        attrs = {k: v for k, v in dataset.root.attrs.items() if k != VALIDATION_ATTR}  # the copy is not validated
        meta = {"name": Path(path).name, "attrs": attrs, "arrays": {}, "episode_ends": ends.tolist()}
        for key, arr in dataset.arrays.items():
            name = f"data/{key}"
            meta["arrays"][name] = {"shape": [committed, *arr.shape[1:]], "dtype": str(arr.dtype)}
            if name not in POINT_KEYS:  # small: whole array, bit-exact
                put(f"{s}/{name}", codec.encode(np.ascontiguousarray(dataset.read(key))))
        header["stores"].append(meta)
        has_rgb = "obs/rgb" in dataset.arrays
        starts = np.concatenate([[0], ends[:-1]])
        for e, (a, b) in enumerate(zip(starts, ends)):
            xyz = dataset.read("obs/xyz", a, b)
            rgb = dataset.read("obs/rgb", a, b) if has_rgb else None
            origin, deltas, rgb_planar = encode_points(xyz, rgb, quantum)
            put(f"{s}/ep{e}/origin", origin.tobytes())
            put(f"{s}/ep{e}/xyz", codec.encode(deltas))
            if rgb_planar is not None:
                put(f"{s}/ep{e}/rgb", codec.encode(rgb_planar))
        print(f"packed {path}: {len(ends)} episodes, {committed} rows", flush=True)
    header["parts"] = len(parts)
    written = []
    try:
        for i, content in enumerate(parts):
            d = out / f"part-{i:03d}"
            d.mkdir(parents=True)
            written.append(d)
            np.savez(d / "part.npz", **{k.replace("/", "|"): v for k, v in content.items()})
        (out / "part-000" / "header.json").write_text(json.dumps(header))
    except BaseException:  # a full disk or an interrupt: no partial pack is left to be mistaken for a whole one
        for d in written:
            shutil.rmtree(d, ignore_errors=True)
        raise
    total = sum(sizes)
    print(f"{len(parts)} parts, {total / 1e6:.1f} MB ({', '.join(f'{x / 1e6:.1f}' for x in sizes)})")
    return written


# --------------------------------------------------------------------------- unpack
def unpack(part_dirs: list[Path], out_dir: Path) -> list[Path]:
    codec = numcodecs.Zstd()
    header_files = [d / "header.json" for d in part_dirs if (d / "header.json").exists()]
    if len(header_files) != 1:
        raise SystemExit(f"error: expected exactly one part with header.json among {[str(d) for d in part_dirs]}")
    header = json.loads(header_files[0].read_text())
    if header.get("format") != FORMAT:
        raise SystemExit(f"error: unknown pack format {header.get('format')!r} (expected {FORMAT!r})")
    if len(part_dirs) != header["parts"]:
        raise SystemExit(f"error: {len(part_dirs)} parts given but the pack has {header['parts']}")
    blobs: dict[str, np.ndarray] = {}
    for d in part_dirs:
        with np.load(d / "part.npz") as z:
            blobs.update({k.replace("|", "/"): z[k] for k in z.files})
    quantum = header["quantum_m"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for s, meta in enumerate(header["stores"]):
        target = out_dir / meta["name"]
        if target.exists():
            raise SystemExit(f"error: {target} exists (expected a new store path)")
        tmp = out_dir / (meta["name"] + ".unpacking")
        try:
            _write_store(tmp, meta, blobs, s, quantum, codec)
        except BaseException:  # no partial store left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(target)
        written.append(target)
        ends = meta["episode_ends"]
        print(f"unpacked {target}: {len(ends)} episodes, {ends[-1] if ends else 0} rows", flush=True)
    return written


def _write_store(tmp: Path, meta: dict, blobs: dict[str, np.ndarray], s: int, quantum: float, codec) -> None:
    """Store ``s`` of the pack rebuilt at ``tmp`` through the one writer (same manifest and chunking, a new
    chunk inventory, plus ``transport`` in the attributes)."""
    from ms2core.data.store import write_dataset
    from storage_schemas.dataset import DatasetManifest

    ends = np.asarray(meta["episode_ends"], np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    columns: dict[str, np.ndarray] = {}
    for name, info in meta["arrays"].items():
        if name in POINT_KEYS or not name.startswith("data/"):  # meta/* of older packs: episode_ends is in the header
            continue
        data = np.frombuffer(codec.decode(blobs[f"{s}/{name}"]), np.dtype(info["dtype"])).reshape(info["shape"])
        columns[name.removeprefix("data/")] = data
    xyz_info = meta["arrays"]["data/obs/xyz"]
    xyz_all = np.zeros(xyz_info["shape"], np.dtype(xyz_info["dtype"]))
    rgb_info = meta["arrays"].get("data/obs/rgb")
    rgb_all = np.zeros(rgb_info["shape"], np.uint8) if rgb_info else None
    n_points = xyz_info["shape"][1]
    for e, (a, b) in enumerate(zip(starts, ends)):
        deltas = np.frombuffer(codec.decode(blobs[f"{s}/ep{e}/xyz"]), np.int16).reshape(b - a, 3, n_points)
        origin = np.frombuffer(blobs[f"{s}/ep{e}/origin"].tobytes(), np.float64)
        rgb_planar = None
        if rgb_all is not None:
            rgb_planar = np.frombuffer(codec.decode(blobs[f"{s}/ep{e}/rgb"]), np.uint8).reshape(b - a, 3, n_points)
        xyz, rgb = decode_points(origin, deltas, rgb_planar, quantum, xyz_all.dtype)
        xyz_all[a:b] = xyz
        if rgb_all is not None:
            rgb_all[a:b] = rgb
    columns["obs/xyz"] = xyz_all
    if rgb_all is not None:
        columns["obs/rgb"] = rgb_all
    manifest = DatasetManifest.model_validate(meta["attrs"][MANIFEST_ATTR])
    write_dataset(str(tmp), manifest, columns, np.diff(np.concatenate([[0], ends])))
    root = zarr.open_group(str(tmp), mode="r+")
    extra = {k: v for k, v in meta["attrs"].items() if k not in (MANIFEST_ATTR, VALIDATION_ATTR)}
    root.attrs.update({**extra, "transport": {"format": FORMAT, "xyz_quantum_m": quantum, "point_order": "morton"}})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("stores", nargs="+")
    pk.add_argument("--out", required=True, type=Path)
    pk.add_argument("--part-mb", type=float, default=48.0)
    pk.add_argument("--quantum", type=float, default=0.001, help="xyz quantisation step in metres")
    pk.add_argument("--level", type=int, default=12, help="zstd level")
    up = sub.add_parser("unpack")
    up.add_argument("parts", nargs="+", type=Path)
    up.add_argument("--out-dir", required=True, type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        if not 0 < args.quantum <= 0.01:
            raise SystemExit(f"error: --quantum {args.quantum} m (expected 0 < quantum <= 0.01)")
        pack(args.stores, args.out, args.part_mb, args.quantum, args.level)
    else:
        unpack(sorted(args.parts), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
