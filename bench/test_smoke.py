"""CI smoke test of the benchmark: bench/main.py's entry point, in-process, smoke preset.

Runs binary dice and focal at 64K elements (fp32 logits and target) and multi-class
multiclass_dice and multiclass_focal at 2x8x64x64 (fp32 logits, uint8 class map), eager plus every fused
backend (on a CPU-only machine the Triton kernels through the interpreter), then checks
the written reports and that the fused path keeps less memory for backward than the
eager reference. A second test checks, without measuring, which cases loss names select.
"""

import importlib.util
import json
from pathlib import Path

import _cases
import _plan
import _providers
import _report
import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent


def _load_main():
    # Loaded by path under its own name: a bare `import main` could pick another module.
    spec = importlib.util.spec_from_file_location("fusedloss_bench_main", BENCH_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_preset_writes_reports_and_fused_saves_less(tmp_path):
    argv = ["--preset", "smoke", "--out", str(tmp_path)]
    if not torch.cuda.is_available():
        argv.append("--with-triton-interpreter")
    exit_code = _load_main().main(argv)

    document = json.loads((tmp_path / _report.JSON_NAME).read_text())
    expected_columns = [key for key, _, _ in _report.COLUMNS]
    assert document["columns"] == expected_columns
    assert {"device", "copy_gbps", "torch", "preset"} <= set(document["meta"])
    rows = document["rows"]
    assert rows, document["notes"]
    for row in rows:
        assert set(expected_columns) <= set(row)
        assert row["status"] == "ok", row
        assert " vs eager " not in row["note"], row  # a provider's loss differs from eager's
        if row["family"] == "multiclass":
            # fp32 logits (read twice, gradient written) + uint8 class map of numel / C (read twice)
            assert row["classes"] == 8 and row["shape"] == "2x8x64x64" and row["target_shape"] == "2x64x64", row
            assert row["floor_bytes"] == row["numel"] * 12 + 2 * row["numel"] // 8
        else:
            assert row["classes"] is None
            assert row["floor_bytes"] == row["numel"] * 20  # fp32 logits + fp32 target, fwd+bwd
        assert row["time_ms"] > 0 and row["gbps"] > 0 and 0 < row["roofline"]
    assert {row["loss"] for row in rows if row["provider"] == "eager"} == {
        "dice", "focal", "multiclass_dice", "multiclass_focal"}
    assert {(row["loss"], row["layout"]) for row in rows if row["layout"] != "contiguous"} == {
        ("multiclass_dice", "channels_last")
    }

    markdown = (tmp_path / _report.MARKDOWN_NAME).read_text()
    header_line = next(line for line in markdown.splitlines() if line.startswith("| loss"))
    assert [cell.strip() for cell in header_line.strip("|").split("|")] == [header for _, header, _ in _report.COLUMNS]

    eager = {(row["loss"], row["layout"]): row for row in rows if row["provider"] == "eager"}
    fused = [row for row in rows if row["provider"] not in ("eager", "compile")]
    if not fused:
        pytest.skip(f"no fused backend ran here: {document['notes']}")
    for row in fused:
        assert row["extra_mem_bytes"] < eager[(row["loss"], row["layout"])]["extra_mem_bytes"], row
    if document["meta"]["device"] == "cpu" and "cpu" in _fusedloss().available_backends("cpu", "multiclass"):
        # the C++ CPU kernels ran the multi-class cases too (compared with eager just above)
        assert {row["loss"] for row in fused if row["provider"] == "cpu"} >= {"multiclass_dice", "multiclass_focal"}, (
            rows
        )
    assert exit_code == 0


def _fusedloss():
    import fusedloss

    return fusedloss


def test_loss_names_select_cases_of_their_family():
    # Only plans, measures nothing: --losses picks the preset's groups of each name's family.
    plan = _plan.make_plan("quick", "cpu", "multiclass_dice,dice")
    assert {case.loss for case in plan.cases} == {"multiclass_dice", "dice"}
    for case in plan.cases:
        if case.loss == "multiclass_dice":
            assert case.multiclass and case.classes == case.shape[1] and case.target_dtype == "uint8"
        else:
            assert not case.multiclass and case.target_shape == case.shape
    default = _plan.make_plan("quick", "cpu")
    assert {"multiclass_dice", "multiclass_focal", "dice_ce", "dice", "dice_bce"} <= {
        case.loss for case in default.cases
    }
    shapes = {case.shape for case in default.cases if case.multiclass}
    assert (2, 150, 128, 128) in shapes  # large C, where eager's one-hot and softmax cost most memory
    full = _plan.make_plan("full", "cpu", "multiclass_iou,multiclass_tversky,multiclass_focal_tversky")
    assert full.cases and all(case.multiclass for case in full.cases)
    with pytest.raises(_plan.PlanError):
        _plan.make_plan("smoke", "cpu", "no_such_loss")
    # a name asked for replaces the group's default losses (smoke's multi-class group has no dice_ce)
    smoke = _plan.make_plan("smoke", "cpu", "dice_ce")
    assert [(case.loss, case.shape, case.layout) for case in smoke.cases] == [
        ("dice_ce", (2, 8, 64, 64), "contiguous"), ("dice_ce", (2, 8, 64, 64), "channels_last")]


def test_backend_without_softmax_is_left_out_of_multiclass_cases():
    # Measures nothing: a backend that fusedloss lists for the binary losses only keeps its
    # binary cases, and its multi-class cases are left out with a note (not an error).
    fusedloss = _fusedloss()

    class SigmoidOnly:
        def __getattr__(self, name):
            return getattr(fusedloss, name)

        def available_backends(self, device, family="binary"):
            return fusedloss.available_backends(device) if family == "binary" else ["reference"]

    device = torch.device("cpu")
    providers, notes = _providers.resolve_providers(SigmoidOnly(), device, ["eager", "cpu"])
    if [provider.name for provider in providers] != ["eager", "cpu"]:
        pytest.skip(f"no C++ CPU backend here: {notes}")
    assert any("multiclass losses" in note for note in notes), notes
    eager, cpu = providers
    multiclass = _cases.Case("multiclass_dice", (2, 8, 64, 64), "float32", "uint8", _cases.FWD_BWD)
    binary = _cases.Case("dice", (1, 1, 256, 256), "float32", "float32", _cases.FWD_BWD)
    assert callable(cpu.loss_fn(binary)) and callable(eager.loss_fn(multiclass))
    with pytest.raises(_providers.Unavailable, match="multiclass"):
        cpu.loss_fn(multiclass)


def test_a_requested_provider_that_cannot_run_is_an_error():
    # Named with --providers, a backend that cannot run here fails the plan: a dropped
    # column would read as if it had been measured.
    with pytest.raises(_plan.PlanError, match="provider 'cuda' cannot run on cpu here"):
        _plan.make_plan("smoke", "cpu", None, "eager,cuda")
    with pytest.raises(_plan.PlanError, match="provider 'triton' cannot run on cpu here: on CPU only with"):
        _plan.make_plan("smoke", "cpu", None, "cpu,triton")
    assert [provider.name for provider in _plan.make_plan("smoke", "cpu", None, "eager,cpu").providers] == [
        "eager", "cpu"]
