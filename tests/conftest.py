"""Test setup: the Triton kernels run on CUDA when a GPU is present, else on
the CPU under the Triton interpreter, which must be enabled before fusedloss
(and its @triton.jit kernels) is imported."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.pop("FUSEDLOSS_BACKEND", None)  # tests choose backends explicitly


def pytest_configure(config):
    """FUSEDLOSS_EXPECT_BACKENDS (CI sets it, e.g. 'triton,cpu,reference'): the suite
    stops at collection when one of them cannot run here, for either loss family,
    instead of silently dropping the tests parametrized over it."""
    expected = [name for name in os.environ.get("FUSEDLOSS_EXPECT_BACKENDS", "").split(",") if name]
    if not expected:
        return
    import fusedloss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for family in ("binary", "multiclass"):
        available = fusedloss.available_backends(device, family)
        missing = [name for name in expected if name not in available]
        if missing:
            raise pytest.UsageError(
                f"FUSEDLOSS_EXPECT_BACKENDS={','.join(expected)}: {missing} cannot run the "
                f"{family} losses on {device}: {fusedloss.backends()}"
            )


# The suite's longest tests, started first: xdist hands tests to its workers in collection order,
# so one collected last (the Triton 3.6 ahead-of-time compile, ~3 minutes) would run alone at the
# end of the run while the other worker idles. A stable sort: everything else keeps its order.
LONGEST_FIRST = ("tests/test_triton_compiles.py::", "tests/test_cpp_extension.py::test_builds_on_first_use")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))
