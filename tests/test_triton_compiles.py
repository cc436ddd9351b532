"""The Triton kernels compile for a real GPU, checked ahead of time on a machine
without one. The interpreter (the CPU tests) runs the kernels as Python and
accepts what the compiler may reject: Triton 3.6's compiler crashed on both
finalize kernels, which the interpreter ran fine. Every launch a set of loss
calls makes is recorded here, then tests/triton_aot.py compiles each for sm_90
(Triton's own compiler and ptxas; nothing runs)."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedloss
from helpers import DEVICE, IGNORE, make_class_pair, make_pair

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or DEVICE.type != "cpu",
                                reason="on a GPU the Triton kernels are compiled (and run) by every other test")


def _kind(value):
    import triton.language as tl

    if isinstance(value, torch.Tensor):
        return ["tensor", str(value.dtype)]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", None]
    if isinstance(value, tl.dtype):
        return ["dtype", str(value)]
    raise TypeError(f"unexpected kernel argument {value!r}")


def _record_launches(monkeypatch):
    """Patch the interpreter's launch to record (kernel, argument kinds, constexprs, num_warps)."""
    from triton.runtime import interpreter

    launches = {}
    run = interpreter.InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        parameters = list(inspect.signature(self.fn).parameters.values())
        bound = dict(zip((p.name for p in parameters), args)) | {
            name: value for name, value in kwargs.items() if name in {p.name for p in parameters}}
        launch = {"module": self.fn.__module__, "name": self.fn.__name__, "num_warps": kwargs.get("num_warps", 4),
                  "args": [[p.name, "constexpr" in str(p.annotation)] + _kind(bound[p.name]) for p in parameters]}
        launches[json.dumps(launch, sort_keys=True)] = launch
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(interpreter.InterpretedFunction, "run", recording_run)
    return launches


def _loss_calls():
    """Calls that reach every kernel with each flag combination and dtype class."""
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x, t = make_pair((2, 3, 9, 11), dtype, torch.uint8)
        for name, options in (("dice", {}), ("dice_bce", {"per_channel": True}), ("focal", {}),
                              ("focal", {"reduction": "none"}), ("focal_tversky", {"per_sample": True})):
            yield fusedloss.LOSSES[name], x, t, options
        x, y = make_class_pair((2, 5, 7, 9), dtype, torch.uint8, ignore_fraction=0.1)
        for name, options in (("dice", {"mode": "multiclass", "exclude_empty": True, "include_background": False}),
                              ("focal", {"mode": "multiclass", "reduction": "none"}),
                              ("dice_ce", {"per_sample": True})):
            yield fusedloss.MULTICLASS_LOSSES[name], x, y, dict(options, ignore_index=IGNORE)


def _triton_trees():
    """The installed Triton, then each folder in FUSEDLOSS_AOT_TRITON_PATHS (os.pathsep
    separated, made by `pip install --target DIR triton==X`): the Makefile adds the
    GPU machine's version, whose compiler differs (3.6 crashed where 3.9 did not)."""
    return [None] + [p for p in os.environ.get("FUSEDLOSS_AOT_TRITON_PATHS", "").split(os.pathsep) if p]


@pytest.fixture(scope="module")
def recorded_launches(tmp_path_factory):
    pytest.importorskip("triton.backends.nvidia", reason="this Triton has no NVIDIA backend to compile with")
    with pytest.MonkeyPatch.context() as monkeypatch:
        launches = _record_launches(monkeypatch)
        for fn, x, t, options in _loss_calls():
            x = x.detach().requires_grad_(True)
            loss = fn(x, t, backend="triton", **options)
            torch.autograd.grad(loss.sum(), x)
    kernels = {(launch["module"], launch["name"]) for launch in launches.values()}
    assert len(kernels) == 8, kernels  # stats, finalize, backward and focal map of both families
    path = tmp_path_factory.mktemp("aot") / "launches.json"
    path.write_text(json.dumps(list(launches.values())))
    return path


@pytest.mark.parametrize("tree", _triton_trees(), ids=lambda tree: "installed" if tree is None else Path(tree).name)
def test_every_triton_kernel_compiles_for_sm90(recorded_launches, tree, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    expected_version = None
    if tree is not None:
        (dist_info,) = Path(tree).glob("triton-*.dist-info")  # the tree must hold one Triton
        expected_version = dist_info.name[len("triton-"):-len(".dist-info")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    script = Path(__file__).with_name("triton_aot.py")
    result = subprocess.run([sys.executable, str(script), str(recorded_launches)], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " 0 failed" in result.stdout, result.stdout
    if expected_version is not None:
        assert f"(triton {expected_version})" in result.stdout, result.stdout
