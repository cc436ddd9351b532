"""The C++ extension (csrc/): its ops' schemas match the Triton ops' (one
op contract for every backend), and it was built with what CI asked for. The
'cpu' and 'cuda' backends run the rest of the suite like every fused backend."""

import os

import pytest
import torch
from helpers import ONLY_THE_COPY, package_without_extension, run_python

import fusedloss
from fusedloss.ops import cpp_ops
from fusedloss.ops.schema import LOVASZ_SCHEMAS, SCHEMAS, SYNC_SCHEMAS

# FUSEDLOSS_BUILD_CPU=0 is the one documented way to install without the extension.
OPTED_OUT = os.environ.get("FUSEDLOSS_BUILD_CPU") == "0"
needs_extension = pytest.mark.skipif(cpp_ops.unavailable_reason("cpu") is not None,
                                     reason=f"C++ extension not available: {cpp_ops.unavailable_reason('cpu')}")


@needs_extension
@pytest.mark.parametrize("name", sorted({**SCHEMAS, **SYNC_SCHEMAS, **LOVASZ_SCHEMAS}))
def test_schema_matches_triton_ops(name):
    cpp_schema = getattr(torch.ops.fusedloss_C, name).default._schema
    triton_schema = getattr(fusedloss.ops.fused_ops("triton"), name).default._schema
    assert str(cpp_schema).split("::", 1)[1] == str(triton_schema).split("::", 1)[1]


@pytest.mark.skipif(OPTED_OUT, reason="FUSEDLOSS_BUILD_CPU=0: installed without the C++ extension on purpose")
def test_cpu_kernels_registered():
    """Not skipped when the extension is missing: that is what it checks."""
    assert cpp_ops.unavailable_reason("cpu") is None, cpp_ops.unavailable_reason("cpu")
    for name in ("binary_loss", "multiclass_loss", *LOVASZ_SCHEMAS):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedloss_C::{name}", "CPU"), name
    assert "cpu" in fusedloss.available_backends("cpu")


@pytest.mark.skipif(os.environ.get("FUSEDLOSS_EXPECT_CUDA_KERNELS") != "1",
                    reason="set FUSEDLOSS_EXPECT_CUDA_KERNELS=1 where the CUDA part must have been built (CI)")
@needs_extension
def test_cuda_kernels_compiled_and_linked():
    for name in {**SCHEMAS, **LOVASZ_SCHEMAS}:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedloss_C::{name}", "CUDA"), name


@needs_extension
def test_builds_on_first_use_without_prebuilt(tmp_path):
    """A copy of the package without fusedloss/_C*.so compiles csrc/ with ninja
    the first time backend='auto' runs on CPU tensors (as naming a C++ backend
    would), says so and how long it took, then runs the C++ kernels: no silent
    fallback to the reference."""
    root = package_without_extension(tmp_path)
    script = ONLY_THE_COPY + (
        "import warnings\n"
        "import torch, fusedloss\n"
        "from fusedloss.ops import cpp_ops\n"
        "assert cpp_ops.unavailable_reason('cpu') is not None, 'expected no prebuilt extension'\n"
        "x = torch.randn(2, 3, 5); t = torch.rand(2, 3, 5)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    fused = fusedloss.dice_loss(x, t)\n"
        "assert cpp_ops.unavailable_reason('cpu') is None, cpp_ops.unavailable_reason('cpu')\n"
        "messages = [str(w.message) for w in caught]\n"
        "assert len(messages) == 1 and 'compiled the C++ kernels in' in messages[0], messages\n"
        "torch.testing.assert_close(fused, fusedloss.dice_loss(x, t, backend='reference'))\n"
        "assert torch.equal(fused, fusedloss.dice_loss(x, t, backend='cpu'))\n"
        "print('built and ran')\n"
    )
    # The baseline instruction set only (FUSEDLOSS_CPU_CLONES=0) and no optimisation
    # (FUSEDLOSS_CPU_OPT=0): the mechanism is what is tested, and the full build's AVX2 / AVX-512
    # clones at -O3 would take this test (the suite's longest) several times its minutes.
    result = run_python(script, root, timeout=600, PYTHONPATH=str(root), TORCH_EXTENSIONS_DIR=str(root / "build"),
                        FUSEDLOSS_BUILD_CUDA="0", FUSEDLOSS_CPU_CLONES="0", FUSEDLOSS_CPU_OPT="0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built and ran" in result.stdout
    assert "fusedloss: compiling the C++ kernels (csrc/) for their first use" in result.stderr


@needs_extension
def test_ops_reject_empty_input_without_crashing():
    """Called directly (the Python API checks first), the C++ ops refuse an empty
    batch with an error; before, the CPU kernels' layout arithmetic divided by
    zero and killed the process. In a subprocess, so a crash fails only this test."""
    import subprocess
    import sys

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and cpp_ops.unavailable_reason("cuda") is None else [])
    script = (
        "import torch, fusedloss\n"
        "from fusedloss._spec import dice_spec\n"
        "C = fusedloss.ops.fused_ops('cpu')\n"
        "spec = dice_spec(1.0, 1.0)._asdict()\n"
        f"for device in {devices!r}:\n"
        "    x = torch.empty(0, 3, 4, device=device)\n"
        "    y = torch.empty(0, 4, dtype=torch.long, device=device)\n"
        "    calls = {\n"
        "        'binary_loss': lambda: C.binary_loss(x, x, None, True, True, **spec, ignore_index=None,\n"
        "                                             reduction='mean', check_target=True),\n"
        "        'binary_focal_map': lambda: C.binary_focal_map(x, x, .25, 2., 0, True, False, None, True),\n"
        "        'multiclass_loss': lambda: C.multiclass_loss(x, y, None, None, False, **spec, ignore_index=None,\n"
        "                                                     include_background=True, exclude_empty=False,\n"
        "                                                     reduction='mean', check_target=True),\n"
        "    }\n"
        "    for name, call in calls.items():\n"
        "        try:\n"
        "            call()\n"
        "            print(device, name, 'returned')\n"
        "        except RuntimeError as e:\n"
        "            print(device, name, 'refused' if 'input must not be empty' in str(e) else repr(e))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * len(devices) and all(line.endswith(" refused") for line in lines), result.stdout
