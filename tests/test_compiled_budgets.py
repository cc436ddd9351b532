"""The compiled Triton kernels keep their budgets, checked ahead of time without a GPU: the
planned launches (tests/planned_launches.py: the CUDA plans' block sizes and warps, the
divisibility of a real launch) are compiled for sm_90 by each Triton in
FUSEDLOSS_AOT_TRITON_PATHS (the GPU machine's 3.6 in `make test`), else the installed one, and
their cubins read (tests/compiled_profile.py):

- no kernel spills registers (fp32 and bf16 logits);
- the binary family's main loops load the logits and store the gradient 128 bits at a time
  (a lost vectorisation multiplies the memory instructions) and stay within their instruction
  budgets per element (planned_launches.INSTRUCTION_BUDGETS) by at most 10%;
- the multi-class statistics and backward kernels at up to 32 classes allow 2 CTAs per SM
  (registers, and the shared memory Triton requests at launch: the pipelined loop's buffers),
  and their main loops are software-pipelined (tl.range's num_stages: the tile's loads are
  asynchronous copies to shared memory, LDGSTS, with no plain global load left in the loop).

bench/triton_report.py writes the same profiles as the committed report."""

import os

import pytest
from helpers import DEVICE
from planned_launches import budget_of, occupancy_goal, record
from triton_aot import run_compile, triton_trees

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or DEVICE.type != "cpu",
                                reason="records launches under the interpreter (the CPU suite's Triton runs)")

BUDGET_SLACK = 1.10


def _budgeted(label):
    # The calls the budgets and goals name: the binary family, and multi-class at few classes.
    return label.split()[0] in ("dice", "dice_bce", "focal", "dice_ce") and "C=150" not in label


@pytest.fixture(scope="module", params=triton_trees(), ids=lambda tree: "installed" if tree is None else
                os.path.basename(tree))
def profiles(request, tmp_path_factory):
    pytest.importorskip("triton.backends.nvidia", reason="this Triton has no NVIDIA backend to compile with")
    workdir = tmp_path_factory.mktemp("budgets")
    record(workdir / "launches.json", only=_budgeted)
    result, summary, profiles = run_compile(workdir / "launches.json", request.param, workdir, profile=True)
    assert result.returncode == 0 and summary["failed"] == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert len(profiles) == summary["compiled"], summary
    return profiles


def _label(profile):
    return f"{profile['kernel'].rsplit('.', 1)[-1]} of {profile['calls']}"


def test_no_kernel_spills(profiles):
    spilled = [_label(p) for p in profiles if p["spills"]]
    assert not spilled, spilled


def test_binary_loops_move_128_bits(profiles):
    streaming = [p for p in profiles if p["kernel"].endswith(("binary_triton._stats_kernel",
                                                              "binary_triton._backward_kernel"))]
    assert len(streaming) >= 10, len(streaming)  # fp32 and bf16, three losses, forward and backward
    for profile in streaming:
        accesses = profile["global_accesses"]
        assert profile["loop"], _label(profile)
        # The logits (and an upstream map): 128-bit loads; the uint8 target: 32 or 64 bits a thread.
        assert accesses.get("LDG.128", 0) >= 1, (_label(profile), accesses)
        assert not any(kind in accesses for kind in ("LDG.8", "LDG.16")), (_label(profile), accesses)
        stores = {kind: n for kind, n in accesses.items() if kind.startswith("STG")}
        if profile["kernel"].endswith("_backward_kernel"):
            assert set(stores) == {"STG.128"}, (_label(profile), accesses)


def test_binary_instruction_budgets(profiles):
    budgeted = [(p, budget_of(p)) for p in profiles if budget_of(p) is not None]
    assert len(budgeted) == 5, [_label(p) for p, _ in budgeted]  # every budget found its kernel
    over = [(_label(p), p["instructions_per_element"], budget) for p, budget in budgeted
            if p["instructions_per_element"] > budget * BUDGET_SLACK]
    assert not over, over


def test_multiclass_occupancy(profiles):
    goals = [(p, occupancy_goal(p)) for p in profiles if occupancy_goal(p) is not None]
    assert len(goals) >= 12, len(goals)  # two class counts, fp32 and bf16, three losses, two kernels
    short = [(_label(p), p["registers"], p["ctas_per_sm"]) for p, goal in goals if p["ctas_per_sm"] < goal]
    assert not short, short


def test_multiclass_loops_pipelined(profiles):
    streaming = [p for p in profiles if occupancy_goal(p) is not None]
    assert len(streaming) >= 12, len(streaming)
    plain = [(_label(p), p["global_accesses"]) for p in streaming
             if not any(kind.startswith("LDGSTS") for kind in p["global_accesses"])
             or any(kind.startswith("LDG.") for kind in p["global_accesses"])]
    assert not plain, plain
