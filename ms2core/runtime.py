"""The relocatable simulator runtime: pack this machine's CPython 3.11 + simulator packages, unpack elsewhere.

SAPIEN 2.2 has wheels up to Python 3.11 only; GPU hosts run newer Pythons. ``pack`` builds a
self-contained tree from the pyenv interpreter and the project venv (versions checked against
``constraints.txt``) and writes it as one tar stream, xz-compressed and cut into size-capped parts:

    OUT/
      runtime-manifest.json        versions, python, platform, sha256 of every part and every tree file
      sim-runtime.tar.xz.000       byte ranges of one .tar.xz (``cat sim-runtime.tar.xz.* | xz -d | tar x``
      sim-runtime.tar.xz.001       works too); each at most --part-size bytes

``unpack`` verifies every part, extracts into a staging sibling of PREFIX, verifies every file,
smoke-runs the interpreter and renames the staging dir into place (nothing partial is left).
The unpacked tree:

    PREFIX/
      bin/python3.11               the interpreter as built (RUNPATH points at the build prefix)
      bin/python                   launcher: LD_LIBRARY_PATH=PREFIX/lib, then exec python3.11
      bin/ms2-sim                  launcher: bin/python -m ms2core.envs.runtime (doctor, versions)
      lib/libpython3.11.so.1.0
      lib/python3.11/              stdlib (no test/, idlelib, tkinter, ensurepip, __pycache__, *.a)
      lib/python3.11/site-packages simulator packages + *.dist-info, ms2flow's ms2core/storage_schemas/
                                   pipelines, placeholder torch/ and cv2/ (ms2core/envs/placeholder_module.py)
      share/vulkan/implicit_layer.d the ms2flow Vulkan layer (lavapipe hosts; scripts/setup builds it)
      ms2flow-runtime.json         the manifest it was unpacked from

Why a launcher and not patchelf: pyenv's python3.11 finds libpython through an absolute RUNPATH
(the build prefix). LD_LIBRARY_PATH is searched before RUNPATH, works at any prefix, needs no tool
on the host (patchelf is on neither machine) and leaves the binary's digest as packed. Processes the
runtime spawns (multiprocessing uses ``sys.executable`` = bin/python3.11) inherit LD_LIBRARY_PATH.

Standard library plus ms2core.errors only, so ``python -m ms2core.runtime unpack`` runs from a checkout
under any host Python >= 3.9.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ms2core.errors import SimulatorRuntimeError
from ms2core.fileio import staged_directory

FORMAT = "ms2flow.sim_runtime"
FORMAT_VERSION = 1
MANIFEST_NAME = "runtime-manifest.json"
ARCHIVE_NAME = "sim-runtime.tar.xz"
INSTALLED_MANIFEST = "ms2flow-runtime.json"
DEFAULT_PART_SIZE = 60 * 2**20  # a part plus the manifest fits a 64 MiB transfer
PY_DIR = "lib/python3.11"
SITE = f"{PY_DIR}/site-packages"

#: What simulator workers import (render, rollout, evaluation, demo generation, replay, validation),
#: found by import-tracing a worker-like script (make_env + step a PickCube point-cloud env, import
#: pipelines.render/demos/validate, ms2core.rollout, distributed.LocalCluster) and mapping
#: sys.modules to distributions, minus torch and opencv-python (placeholders instead) and the packages
#: setuptools vendors (platformdirs, jaraco.*, more-itertools, backports.tarfile: inside setuptools' files).
RUNTIME_DISTRIBUTIONS = (
    "sapien", "mani-skill2", "numpy", "scipy", "gymnasium", "Farama-Notifications", "h5py", "transforms3d",
    "trimesh", "rtree", "networkx", "pillow", "ImageIO", "requests", "urllib3", "idna", "certifi",
    "charset-normalizer", "PySocks", "tqdm", "zarr", "numcodecs", "google-crc32c", "donfig", "fsspec",
    "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions", "fpsample",
    "dask", "distributed", "msgpack", "cloudpickle", "toolz", "tornado", "psutil", "sortedcontainers",
    "tblib", "zict", "locket", "partd", "click", "Jinja2", "MarkupSafe", "PyYAML", "packaging",
    "importlib_metadata", "zipp", "setuptools", "colorama",  # setuptools: sapien imports pkg_resources
)
#: Never in the runtime: the learner's and the orchestrator's packages.
FORBIDDEN_DISTRIBUTIONS = ("torch", "prefect", "mlflow", "mlflow-skinny", "opencv-python")
PLACEHOLDER_MODULES = ("torch", "cv2")
OWN_PACKAGES = ("ms2core", "storage_schemas", "pipelines")
STDLIB_EXCLUDED_DIRS = frozenset({"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages",
                                  "__pycache__"})

PACK_HINT = "run `ms2 runtime pack` again, or copy the parts again from where they were packed"


def host_platform_tag() -> str:
    return f"{platform.machine().lower()}-{sys.platform}"


def sha256_file(path: Path, block: int = 2**20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class PackConfig:
    out_dir: Path
    site_packages: Path | None = None       # default: this interpreter's (the project venv's) purelib
    python_prefix: Path | None = None       # default: sys.base_prefix (the pyenv CPython 3.11)
    constraints: Path | None = None         # default: constraints.txt beside ms2core
    distributions: tuple[str, ...] = RUNTIME_DISTRIBUTIONS
    include_interpreter: bool = True
    include_own_code: bool = True
    part_size: int = DEFAULT_PART_SIZE
    level: int = 3                          # xz preset: 3 packed 616 MiB into 112 MiB in ~9 min on 2 busy cores; 6-9 are slower for a few % less
    overwrite: bool = False


@dataclass
class PackResult:
    out_dir: Path
    parts: list[dict]
    tree_files: int
    tree_bytes: int
    archive_bytes: int
    seconds: float
    distributions: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- what goes in the tree

def read_constraints(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[_norm(name)] = ver.strip()
    return pins


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _distribution_files(site: Path, names: tuple[str, ...], pins: dict[str, str]) -> tuple[dict, dict]:
    """arcname -> source path for every installed file of the distributions, and name -> version."""
    from importlib.metadata import PackageNotFoundError, distribution

    forbidden = {_norm(n) for n in FORBIDDEN_DISTRIBUTIONS}
    entries, versions = {}, {}
    for name in names:
        if _norm(name) in forbidden:
            raise SimulatorRuntimeError(f"{name!r} may not go into the simulator runtime",
                                        hint=f"leave out {', '.join(FORBIDDEN_DISTRIBUTIONS)}: the learner and "
                                             "orchestrator run in the host's own Python")
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SimulatorRuntimeError(f"distribution {name!r} is not installed in {site}",
                                        hint="run scripts/setup, or pack from the project venv") from None
        pinned = pins.get(_norm(name))
        if pinned is not None and pinned != dist.version:
            raise SimulatorRuntimeError(
                f"{name} {dist.version} is installed but constraints.txt pins {name}=={pinned}",
                hint="re-run scripts/setup so the venv matches the project's pins, then pack again")
        versions[dist.metadata["Name"]] = dist.version
        for rel in dist.files or ():
            src = Path(dist.locate_file(rel)).resolve()
            parts = Path(rel).parts
            if parts[0] == ".." or "__pycache__" in parts or src.suffix == ".pyc" or not src.is_file():
                continue  # console scripts outside site-packages, bytecode (unpack compiles)
            entries[f"{SITE}/{Path(rel).as_posix()}"] = src
    return entries, versions


def _walk(root: Path, arc_root: str, skip_dirs=frozenset({"__pycache__"}), skip_suffixes=(".pyc", ".a")):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        rel_dir = Path(dirpath).relative_to(root)
        for fname in sorted(filenames):
            if fname.endswith(skip_suffixes) or fname.startswith("_tkinter"):
                continue
            out[(Path(arc_root) / rel_dir / fname).as_posix()] = Path(dirpath) / fname
    return out


def _interpreter_files(prefix: Path) -> dict[str, Path]:
    binary = (prefix / "bin" / "python3.11").resolve()
    libpython = prefix / "lib" / "libpython3.11.so.1.0"
    for need in (binary, libpython, prefix / PY_DIR / "os.py"):
        if not need.exists():
            raise SimulatorRuntimeError(f"{need} is missing: {prefix} is not a shared-library CPython 3.11",
                                        hint="pack with --python-prefix pointing at pyenv's 3.11 (`python3.11 -c "
                                             "'import sys; print(sys.base_prefix)'`)")
    entries = {"bin/python3.11": binary, "lib/libpython3.11.so.1.0": libpython}
    entries.update(_walk(prefix / PY_DIR, PY_DIR, skip_dirs=STDLIB_EXCLUDED_DIRS))
    return entries


def _layer_files(venv_prefix: Path) -> dict[str, Path]:
    """The ms2flow Vulkan layer scripts/setup built (lavapipe hosts need it; it names its .so relatively)."""
    layer_dir = venv_prefix / "share" / "vulkan" / "implicit_layer.d"
    if not (layer_dir / "ms2flow_cpu_layer.json").is_file():
        return {}  # a runtime without it still renders on NVIDIA; doctor reports the layer missing on lavapipe
    return {f"share/vulkan/implicit_layer.d/{p.name}": p for p in sorted(layer_dir.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def _own_files(project_root: Path) -> dict[str, Path]:
    entries = {}
    for pkg in OWN_PACKAGES:
        entries.update(_walk(project_root / pkg, f"{SITE}/{pkg}"))
    return entries


def _generated_files(own_version: str) -> dict[str, bytes]:
    placeholder = (Path(__file__).parent / "envs" / "placeholder_module.py").read_bytes()
    out = {f"{SITE}/{name}/__init__.py": placeholder for name in PLACEHOLDER_MODULES}
    info = f"{SITE}/ms2flow-{own_version}.dist-info"
    out[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: ms2flow\nVersion: {own_version}\n".encode()
    out[f"{info}/INSTALLER"] = b"ms2 runtime pack\n"
    return out


# --------------------------------------------------------------------------- pack

def pack(cfg: PackConfig) -> PackResult:
    """Write the runtime's parts and manifest to ``cfg.out_dir`` (replaced only with ``overwrite``)."""
    import sysconfig

    import ms2core

    start = time.perf_counter()
    project_root = Path(ms2core.__file__).resolve().parent.parent
    site = Path(cfg.site_packages or sysconfig.get_paths()["purelib"])
    constraints = Path(cfg.constraints or project_root / "constraints.txt")
    out_dir = Path(cfg.out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not cfg.overwrite:
        raise SimulatorRuntimeError(f"{out_dir} exists and is not empty", hint="pass --overwrite or another --out")
    if cfg.part_size < 2**16:
        raise SimulatorRuntimeError(f"part size {cfg.part_size} bytes is too small", hint="use at least 64 KiB")
    if host_platform_tag() != "x86_64-linux":
        raise SimulatorRuntimeError(f"packing on {host_platform_tag()}", hint="pack on Linux x86-64")

    files, versions = _distribution_files(site, tuple(cfg.distributions), read_constraints(constraints))
    if cfg.include_interpreter:
        files.update(_interpreter_files(Path(cfg.python_prefix or sys.base_prefix)))
    files.update(_layer_files(Path(sys.prefix) if cfg.site_packages is None else site.parents[2]))
    own_version = ms2core.__version__
    generated = _generated_files(own_version) if cfg.include_own_code else {}
    if cfg.include_own_code:
        files.update(_own_files(project_root))

    with staged_directory(out_dir) as staging:
        archive = staging / ARCHIVE_NAME
        tree = _write_archive(archive, files, generated, cfg.level)
        parts = _split(archive, staging, cfg.part_size)
        manifest = dict(
            format=FORMAT, format_version=FORMAT_VERSION, platform="x86_64-linux",
            python=platform.python_version() if not cfg.include_interpreter else _python_version(cfg),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            interpreter=dict(included=cfg.include_interpreter, binary="bin/python3.11",
                             libpython="lib/libpython3.11.so.1.0",
                             built_prefix=str(cfg.python_prefix or sys.base_prefix)),
            ms2flow=own_version if cfg.include_own_code else None,
            distributions=versions, placeholders=list(PLACEHOLDER_MODULES) if cfg.include_own_code else [],
            compression="xz", part_size=cfg.part_size,
            archive=dict(name=ARCHIVE_NAME, nbytes=archive.stat().st_size, sha256=sha256_file(archive)),
            parts=parts, tree=tree,
        )
        archive_bytes = archive.stat().st_size
        archive.unlink()
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return PackResult(out_dir=out_dir, parts=parts, tree_files=len(tree),
                      tree_bytes=sum(t["nbytes"] for t in tree.values()), archive_bytes=archive_bytes,
                      seconds=time.perf_counter() - start, distributions=versions)


def _python_version(cfg: PackConfig) -> str:
    prefix = Path(cfg.python_prefix or sys.base_prefix)
    if prefix.resolve() == Path(sys.base_prefix).resolve():
        return platform.python_version()
    out = subprocess.run([str(prefix / "bin" / "python3.11"), "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _write_archive(archive: Path, files: dict[str, Path], generated: dict[str, bytes], level: int) -> dict:
    """One tar stream (sorted names, fixed mtime) through xz; returns arcname -> {sha256, nbytes, mode}."""
    tree = {}
    xz = shutil.which("xz")
    with open(archive, "wb") as sink:
        proc = subprocess.Popen([xz, f"-{level}", "-T0", "-c"], stdin=subprocess.PIPE, stdout=sink) if xz else None
        stream = proc.stdin if proc else lzma.open(sink, "wb", preset=level)
        try:
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(set(files) | set(generated)):
                    if name in generated:
                        data, mode = generated[name], 0o644
                    else:
                        data, mode = files[name].read_bytes(), (os.stat(files[name]).st_mode & 0o755) | 0o644
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), mode, 0
                    tar.addfile(info, io.BytesIO(data))
                    tree[name] = dict(sha256=hashlib.sha256(data).hexdigest(), nbytes=len(data), mode=mode)
        finally:
            stream.close()
            if proc and proc.wait() != 0:
                raise SimulatorRuntimeError(f"xz failed with exit code {proc.returncode} writing {archive}")
    return tree


def _split(archive: Path, out_dir: Path, part_size: int) -> list[dict]:
    parts = []
    with open(archive, "rb") as src:
        index = 0
        while chunk := src.read(part_size):
            name = f"{ARCHIVE_NAME}.{index:03d}"
            (out_dir / name).write_bytes(chunk)
            parts.append(dict(name=name, nbytes=len(chunk), sha256=hashlib.sha256(chunk).hexdigest()))
            index += 1
    return parts


# --------------------------------------------------------------------------- unpack

def read_manifest(parts_dir: Path) -> dict:
    path = Path(parts_dir) / MANIFEST_NAME
    if not path.exists():
        raise SimulatorRuntimeError(f"{path} is missing: {parts_dir} holds no packed simulator runtime",
                                    hint="point at the folder `ms2 runtime pack --out` wrote")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SimulatorRuntimeError(f"{path} is not a readable runtime manifest: {exc}", hint=PACK_HINT) from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise SimulatorRuntimeError(
            f"{path} is not an ms2flow simulator runtime manifest (format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')!r})", hint=f"expected format {FORMAT!r} version {FORMAT_VERSION}")
    return manifest


def verify_parts(parts_dir: Path, manifest: dict) -> list[Path]:
    """Every part present with its recorded size and sha256; refuses naming the first bad part."""
    paths = []
    for part in manifest["parts"]:
        path = Path(parts_dir) / part["name"]
        expected = f"expected sha256 {part['sha256']}, {part['nbytes']} bytes"
        if not path.exists():
            raise SimulatorRuntimeError(f"runtime part {part['name']} is missing from {parts_dir} ({expected})",
                                        hint=PACK_HINT)
        size = path.stat().st_size
        actual = sha256_file(path) if size == part["nbytes"] else None
        if actual != part["sha256"]:
            got = f"sha256 {actual}" if actual else f"{size} bytes"
            raise SimulatorRuntimeError(f"runtime part {part['name']} is corrupt: {got}, {expected}", hint=PACK_HINT)
        paths.append(path)
    return paths


def check_platform(manifest: dict) -> None:
    host = host_platform_tag()
    if manifest.get("platform") != host:
        raise SimulatorRuntimeError(
            f"this runtime was packed for {manifest.get('platform')!r}; this host is {host!r}",
            hint="unpack it on a Linux x86-64 host, or pack a runtime on a machine of this platform")


class _Concat(io.RawIOBase):
    """The parts, read back to back as one stream."""

    def __init__(self, paths: list[Path]):
        self._paths, self._fh = list(paths), None

    def readable(self):
        return True

    def readinto(self, buf):
        while True:
            if self._fh is None:
                if not self._paths:
                    return 0
                self._fh = open(self._paths.pop(0), "rb")
            n = self._fh.readinto(buf)
            if n:
                return n
            self._fh.close()
            self._fh = None


LAUNCHER = """#!/bin/sh
# ms2flow simulator runtime: run its CPython 3.11 wherever this tree lies. python3.11 finds
# libpython3.11.so.1.0 through an absolute RUNPATH (the prefix it was built at); LD_LIBRARY_PATH
# is searched first, so it loads ../lib/libpython3.11.so.1.0 instead. See ms2core/runtime.py.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P)
root=$(dirname -- "$here")
LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHONNOUSERSITE=1
export LD_LIBRARY_PATH PYTHONNOUSERSITE
unset PYTHONHOME
"""
PYTHON_LAUNCHER = LAUNCHER + 'exec "$here/python3.11" "$@"\n'
SIM_LAUNCHER = LAUNCHER + 'exec "$here/python3.11" -P -m ms2core.envs.runtime "$@"\n'  # -P: not the cwd's ms2core


def unpack(parts_dir: Path, prefix: Path, *, overwrite: bool = False, compile_bytecode: bool = True) -> dict:
    """Verify the parts, install the tree at ``prefix`` (atomically); returns the manifest."""
    parts_dir, prefix = Path(parts_dir), Path(prefix).absolute()
    manifest = read_manifest(parts_dir)
    check_platform(manifest)
    paths = verify_parts(parts_dir, manifest)
    if prefix.exists() and any(prefix.iterdir()) and not overwrite:
        raise SimulatorRuntimeError(f"{prefix} exists and is not empty", hint="pass --overwrite or another --prefix")
    with staged_directory(prefix) as staging:
        with io.BufferedReader(_Concat(paths), 2**20) as raw, lzma.open(raw, "rb") as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _check_member(member, manifest)
                tar.extract(member, staging, set_attrs=False, **_TRUSTED)
                os.chmod(staging / member.name, manifest["tree"][member.name]["mode"])
        _verify_tree(staging, manifest)
        if manifest["interpreter"]["included"]:
            _write_launchers(staging)
            _smoke_run(staging)
        (staging / INSTALLED_MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != "tree"},
                                                             indent=1, sort_keys=True))
    if compile_bytecode and manifest["interpreter"]["included"]:
        # Bytecode is not packed (smaller parts); compile once here so workers start fast. Some packages
        # ship files that do not compile (py2 examples); that is not an install failure.
        subprocess.run([str(prefix / "bin" / "python"), "-m", "compileall", "-q", "-j0", str(prefix / PY_DIR)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return manifest


# Members are checked by _check_member (regular files named in the manifest, no absolute or .. paths).
_TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def _check_member(member: tarfile.TarInfo, manifest: dict) -> None:
    name = member.name
    if not member.isfile() or name.startswith("/") or ".." in Path(name).parts or name not in manifest["tree"]:
        raise SimulatorRuntimeError(f"runtime archive holds an unexpected entry {name!r}", hint=PACK_HINT)


def _verify_tree(root: Path, manifest: dict) -> None:
    for name, entry in manifest["tree"].items():
        path = root / name
        if not path.is_file():
            raise SimulatorRuntimeError(f"runtime file {name} is missing after extraction", hint=PACK_HINT)
        if sha256_file(path) != entry["sha256"]:
            raise SimulatorRuntimeError(f"runtime file {name} does not match its sha256 {entry['sha256']}",
                                        hint=PACK_HINT)


def _write_launchers(root: Path) -> None:
    for name, text in (("python", PYTHON_LAUNCHER), ("ms2-sim", SIM_LAUNCHER)):
        path = root / "bin" / name
        path.write_text(text)
        path.chmod(0o755)


def _smoke_run(root: Path) -> None:
    try:
        out = subprocess.run([str(root / "bin" / "python"), "-c", "import sys, ssl, ctypes; print(sys.prefix)"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimulatorRuntimeError(f"the runtime's interpreter does not start on this host: {exc}",
                                    hint="the host needs glibc >= the packing machine's (Debian 12: 2.36)") from exc
    if out.returncode != 0 or Path(out.stdout.strip()).resolve() != root.resolve():
        raise SimulatorRuntimeError(
            f"the runtime's interpreter does not start on this host (exit {out.returncode}): "
            f"{(out.stderr or out.stdout).strip()[-500:]}",
            hint="the host needs glibc >= the packing machine's (Debian 12: 2.36)")


def main(argv: list[str] | None = None) -> int:
    """``python -m ms2core.runtime unpack DIR --prefix P``: unpack without the ms2 CLI's dependencies."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ms2core.runtime")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("unpack")
    up.add_argument("parts_dir")
    up.add_argument("--prefix", required=True)
    up.add_argument("--overwrite", action="store_true")
    up.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    try:
        manifest = unpack(Path(args.parts_dir), Path(args.prefix), overwrite=args.overwrite,
                          compile_bytecode=not args.no_compile)
    except SimulatorRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"unpacked ms2flow simulator runtime (python {manifest['python']}) at {args.prefix}; "
          f"interpreter: {Path(args.prefix) / 'bin' / 'python'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
