"""The relocatable simulator runtime: pack into size-capped parts, verify, unpack; placeholders; refusals.

The fast tier packs a tiny runtime (two small distributions and ms2flow's code, no interpreter). The
`sim` test packs the real one (interpreter, sapien, mani_skill2, ...) and runs its python and
ms2-sim doctor from the unpacked tree; set MS2FLOW_TEST_RUNTIME_PARTS to a folder `ms2 runtime pack`
wrote to reuse it instead of packing again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ms2core import runtime
from ms2core.errors import SimulatorRuntimeError
from ms2core.runtime import MANIFEST_NAME, PackConfig, pack, read_constraints, unpack

TINY = ("msgpack", "toolz")
PLACEHOLDER = Path(runtime.__file__).parent / "envs" / "placeholder_module.py"


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rt") / "parts"
    pack(PackConfig(out_dir=out, distributions=TINY, include_interpreter=False, part_size=2**16, level=1))
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_pack_writes_capped_parts_and_unpack_installs_every_file(tiny_parts, tmp_path):
    manifest = json.loads((tiny_parts / MANIFEST_NAME).read_text())
    assert len(manifest["parts"]) > 1 and all(p["nbytes"] <= 2**16 for p in manifest["parts"])
    assert sorted(p.name for p in tiny_parts.iterdir()) == sorted([MANIFEST_NAME, *(p["name"] for p in manifest["parts"])])
    pins = read_constraints(Path(runtime.__file__).parent.parent / "constraints.txt")
    assert manifest["distributions"] == {"msgpack": pins["msgpack"], "toolz": pins["toolz"]}
    assert manifest["platform"] == "x86_64-linux" and manifest["placeholders"] == ["torch", "cv2"]

    prefix = tmp_path / "rt"
    unpack(tiny_parts, prefix, compile_bytecode=False)
    site = prefix / runtime.SITE
    for name, entry in manifest["tree"].items():
        assert (prefix / name).stat().st_size == entry["nbytes"], name
    assert (site / "torch" / "__init__.py").read_bytes() == PLACEHOLDER.read_bytes()
    assert (site / "ms2core" / "runtime.py").is_file() and (site / "ms2flow-0.1.0.dist-info" / "METADATA").is_file()
    assert not any(n.startswith(f"{runtime.SITE}/{f}") for n in manifest["tree"] for f in ("prefect", "mlflow"))
    assert not any("__pycache__" in n for n in manifest["tree"])
    assert json.loads((prefix / runtime.INSTALLED_MANIFEST).read_text())["parts"] == manifest["parts"]
    venv_layer = Path(sys.prefix) / "share" / "vulkan" / "implicit_layer.d" / "ms2flow_cpu_layer.json"
    if venv_layer.is_file():  # scripts/setup built it: the runtime carries it for lavapipe hosts
        assert (prefix / "share" / "vulkan" / "implicit_layer.d" / "ms2flow_cpu_layer.json").is_file()


def test_missing_part_is_refused_naming_it_and_its_digest(tiny_parts, tmp_path):
    parts = _copy(tiny_parts, tmp_path / "parts")
    part = json.loads((parts / MANIFEST_NAME).read_text())["parts"][1]
    (parts / part["name"]).unlink()
    with pytest.raises(SimulatorRuntimeError, match=f"{part['name']} is missing.*{part['sha256']}"):
        unpack(parts, tmp_path / "rt", compile_bytecode=False)
    assert not (tmp_path / "rt").exists() and list(tmp_path.iterdir()) == [parts]


def test_corrupt_part_is_refused_and_nothing_is_left(tiny_parts, tmp_path):
    parts = _copy(tiny_parts, tmp_path / "parts")
    part = json.loads((parts / MANIFEST_NAME).read_text())["parts"][0]
    data = bytearray((parts / part["name"]).read_bytes())
    data[1000] ^= 0xFF
    (parts / part["name"]).write_bytes(bytes(data))
    with pytest.raises(SimulatorRuntimeError, match=f"{part['name']} is corrupt: sha256 .*expected sha256 "
                                                    f"{part['sha256']}"):
        unpack(parts, tmp_path / "rt", compile_bytecode=False)
    assert list(tmp_path.iterdir()) == [parts]


def test_truncated_part_is_refused(tiny_parts, tmp_path):
    parts = _copy(tiny_parts, tmp_path / "parts")
    part = json.loads((parts / MANIFEST_NAME).read_text())["parts"][-1]
    (parts / part["name"]).write_bytes((parts / part["name"]).read_bytes()[:-10])
    with pytest.raises(SimulatorRuntimeError, match=f"{part['name']} is corrupt: {part['nbytes'] - 10} bytes"):
        unpack(parts, tmp_path / "rt", compile_bytecode=False)


def test_runtime_for_another_platform_is_refused(tiny_parts, tmp_path):
    parts = _copy(tiny_parts, tmp_path / "parts")
    manifest = json.loads((parts / MANIFEST_NAME).read_text())
    manifest["platform"] = "aarch64-darwin"
    (parts / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SimulatorRuntimeError, match="packed for 'aarch64-darwin'; this host is 'x86_64-linux'"):
        unpack(parts, tmp_path / "rt", compile_bytecode=False)


def test_no_manifest_and_existing_prefix_are_refused(tiny_parts, tmp_path):
    with pytest.raises(SimulatorRuntimeError, match="runtime-manifest.json is missing"):
        unpack(tmp_path, tmp_path / "rt")
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt" / "keep").write_text("x")
    with pytest.raises(SimulatorRuntimeError, match="exists and is not empty"):
        unpack(tiny_parts, tmp_path / "rt", compile_bytecode=False)
    assert (tmp_path / "rt" / "keep").read_text() == "x"


def test_pack_refuses_torch_and_versions_off_the_pins(tmp_path):
    with pytest.raises(SimulatorRuntimeError, match="'torch' may not go into the simulator runtime"):
        pack(PackConfig(out_dir=tmp_path / "a", distributions=("msgpack", "torch"), include_interpreter=False))
    pins = tmp_path / "constraints.txt"
    pins.write_text("msgpack==0.0.1\n")
    with pytest.raises(SimulatorRuntimeError, match=r"msgpack .* is installed but constraints.txt pins msgpack==0.0.1"):
        pack(PackConfig(out_dir=tmp_path / "b", distributions=("msgpack",), include_interpreter=False,
                        constraints=pins))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["constraints.txt"]


def test_cli_unpack_of_a_corrupt_part_exits_2_with_the_part_named(tiny_parts, tmp_path):
    parts = _copy(tiny_parts, tmp_path / "parts")
    part = json.loads((parts / MANIFEST_NAME).read_text())["parts"][0]
    (parts / part["name"]).write_bytes(b"garbage")
    result = subprocess.run([sys.executable, "-m", "flows.cli", "runtime", "unpack", str(parts), "--prefix",
                             str(tmp_path / "rt")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert part["name"] in result.stderr and part["sha256"] in result.stderr.replace("\n", "")


# --------------------------------------------------------------------------- the placeholder torch

PROBE = """
import sys, json
import torch
from ms2core.envs.runtime import is_placeholder
out = {"placeholder": is_placeholder("torch"), "isinstance": isinstance(1.0, torch.Tensor),
       "hasattr": hasattr(torch, "zeros")}
try:
    torch.zeros(3)
except AttributeError as exc:
    out["use"] = str(exc)
try:
    import torch.nn
except ModuleNotFoundError as exc:
    out["submodule"] = str(exc)
print(json.dumps(out))
"""


def test_placeholder_torch_imports_and_refuses_any_use(tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_bytes(PLACEHOLDER.read_bytes())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PLACEHOLDER.parents[2])])}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["placeholder"] is True and got["isinstance"] is False and got["hasattr"] is False
    assert "torch.zeros was used" in got["use"] and "soft-body" in got["use"]
    assert "import torch.nn was used" in got["submodule"]


def test_the_project_venvs_real_torch_is_not_a_placeholder():
    from ms2core.envs.runtime import is_placeholder

    assert is_placeholder("torch") is False


def test_soft_body_env_refused_only_where_torch_is_the_placeholder(monkeypatch):
    from ms2core.envs.runtime import refuse_without_torch

    soft = type("PourEnv", (), {"__module__": "mani_skill2.envs.mpm.pour_env"})
    rigid = type("PickCubeEnv", (), {"__module__": "mani_skill2.envs.pick_and_place.pick_cube"})
    fake_torch = types.ModuleType("torch")
    fake_torch.__ms2flow_placeholder__ = True
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    refuse_without_torch("PickCube-v0", rigid)
    with pytest.raises(SimulatorRuntimeError, match="Pour-v0 is a soft-body task .* torch is a placeholder"):
        refuse_without_torch("Pour-v0", soft)
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # a real torch: no refusal
    refuse_without_torch("Pour-v0", soft)


# --------------------------------------------------------------------------- the real runtime (sim)

@pytest.fixture(scope="module")
def real_runtime(tmp_path_factory) -> Path:
    given = os.environ.get("MS2FLOW_TEST_RUNTIME_PARTS")
    parts = Path(given) if given else tmp_path_factory.mktemp("real") / "parts"
    if not given:
        pack(PackConfig(out_dir=parts, level=0))
    prefix = tmp_path_factory.mktemp("unpacked") / "rt"
    unpack(parts, prefix, compile_bytecode=False)
    return prefix


def _run(prefix: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = os.environ.get("HOME", "/root")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=prefix)


@pytest.mark.sim
@pytest.mark.slow
def test_unpacked_runtime_runs_pickcube_refuses_soft_body_and_doctor_names_the_device(real_runtime):
    py = real_runtime / "bin" / "python"
    out = _run(real_runtime, py, "-c", "import sys, sapien, mani_skill2, ms2core; print(sys.prefix, ms2core.__file__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(real_runtime.resolve()) and str(real_runtime) in out.stdout.split()[1]
    step = ("from ms2core.envs import make_env\nenv = make_env('PickCube-v0', obs_mode='pointcloud')\n"
            "env.reset(seed=0)\nobs, r, *_ = env.step(env.action_space.sample())\n"
            "print(obs['pointcloud']['xyzw'].shape)\n"
            "import sys; assert 'torch' in sys.modules and sys.modules['torch'].__ms2flow_placeholder__\n")
    out = _run(real_runtime, py, "-c", step)
    assert out.returncode == 0, out.stderr
    soft = "from ms2core.envs import make_env\nmake_env('Pour-v0')\n"
    out = _run(real_runtime, py, "-c", soft)
    assert out.returncode != 0 and "Pour-v0 is a soft-body task" in out.stderr
    doctor = _run(real_runtime, real_runtime / "bin" / "ms2-sim", "doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["runtime"]["prefix"] == str(real_runtime.resolve())
    assert report["versions"]["sapien"] == "2.2.2" and report["versions"]["torch"].startswith("placeholder")
    assert report["renderer"]["selection"] in ("lavapipe+layer", "nvidia-icd")


@pytest.mark.sim
@pytest.mark.slow
def test_worker_pool_with_the_runtimes_python_is_bit_identical_to_in_process(real_runtime):
    # What users do on the GPU host: sim_python / MS2FLOW_SIM_PYTHON = <runtime>/bin/python.
    from tests.sim.test_workers_sim import _trace

    inline, foreign = _trace(0, None), _trace(0, str(real_runtime / "bin" / "python"))
    assert len(inline) == len(foreign)
    for a, b in zip(inline, foreign):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.sim
@pytest.mark.slow
def test_the_runtime_runs_the_checkouts_code_when_asked_and_its_workers_always(real_runtime):
    # Code changed since the pack needs no new pack: PYTHONPATH=<checkout> (what SimPool gives its workers) wins.
    checkout = str(Path(runtime.__file__).resolve().parents[1])
    py = real_runtime / "bin" / "python"
    code = "import ms2core, os; print(os.path.dirname(os.path.dirname(os.path.abspath(ms2core.__file__))))"
    packed = _run(real_runtime, py, "-c", code)
    assert packed.returncode == 0 and packed.stdout.strip().endswith("site-packages")
    env = dict(os.environ, PYTHONPATH=checkout)
    overlay = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert overlay.returncode == 0 and overlay.stdout.strip() == checkout, overlay.stderr
    doctor = subprocess.run([str(real_runtime / "bin" / "ms2-sim"), "doctor", "--json"], capture_output=True,
                            text=True, env=env, cwd="/", timeout=300)
    assert json.loads(doctor.stdout)["code_origin"] == "checkout (PYTHONPATH overlay)"
    from ms2core.workers import SimPool

    with SimPool(2, python=str(py)) as pool:
        assert [i["code_root"] for i in pool.worker_info] == [checkout, checkout]
        assert all(i["executable"].startswith(str(real_runtime.resolve())) for i in pool.worker_info)
