"""CI smoke test of the benchmark: bench/main.py's entry point, in-process, smoke preset.

Runs binary dice and focal at 64K elements (fp32 logits and target) and multi-class
multiclass_dice and multiclass_focal at 2x8x64x64 (fp32 logits, uint8 class map), eager plus every fused
backend (on a CPU-only machine the Triton kernels through the interpreter), then checks
the written reports and that the fused path keeps less memory for backward than the
eager reference. Other tests check, without measuring, which cases loss names select and
where the variant rows fall; what each function of a variant case is called with; and one
runs tiny variant cases through every provider (torch.compile stubbed) against eager.
"""

import importlib.util
import inspect
import json
from pathlib import Path

import _cases
import _plan
import _providers
import _report
import _run
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


def test_variant_cases_are_planned_after_the_plain_ones():
    # Only plans: the quick preset's variant rows and Dice+Focal come last, after every
    # plain row it had before them; a plain case's label is the same as before variants.
    for device in ("cpu", "cuda"):
        cases = _cases.build_cases(_cases.get_preset("quick", torch.device(device)), None,
                                   _providers.known_losses(_fusedloss()))
        late = [index for index, case in enumerate(cases) if case.variant or "dice_focal" in case.loss]
        assert late == list(range(len(cases) - len(late), len(cases))), device
        assert {(case.loss, case.variant) for case in cases[late[0]:]} == {
            ("dice", "probabilities"), ("dice", "squared_pred"), ("dice_bce", "probabilities"),
            ("dice_bce", "squared_pred"), ("dice_focal", ""), ("multiclass_dice", "probabilities"),
            ("dice_ce", "probabilities"), ("multiclass_dice_focal", "")}
        for case in cases:
            assert case.label.count(" ") == (4 if case.variant else 3) + (case.layout != "contiguous"), case.label
    plain = _cases.Case("dice", (16, 1, 512, 512), "float32", "uint8", _cases.FWD_BWD)
    squared = _cases.Case("dice", (16, 1, 512, 512), "float32", "uint8", _cases.FWD_BWD, variant="squared_pred")
    assert plain.label == "dice 16x1x512x512 float32/uint8 fwd+bwd"
    assert squared.label == "dice 16x1x512x512 squared_pred float32/uint8 fwd+bwd"
    assert squared.floor_bytes == plain.floor_bytes and squared.options == {"squared_pred": True}
    # a loss without the option is left out of that variant (focal has no squared_pred)
    focal = _plan.make_plan("quick", "cpu", "focal,multiclass_focal")
    assert {case.variant for case in focal.cases} == {"", "probabilities"}
    with pytest.raises(ValueError, match="no variant"):
        _cases.Case("focal", (1, 1, 64, 64), "float32", "uint8", _cases.FWD_BWD, variant="squared_pred")
    full = _plan.make_plan("full", "cpu", "dice_bce,dice_focal,multiclass_dice_focal")
    assert {(case.loss, case.variant) for case in full.cases} >= {
        ("dice_focal", ""), ("dice_bce", "squared_pred"), ("multiclass_dice_focal", "")}


def test_variant_options_reach_each_function_by_its_names():
    # Measures nothing: the fused function gets the public options, the reference its own
    # names, only those it takes.
    fusedloss = _fusedloss()
    reference = fusedloss.reference

    def options(loss, variant):
        functional, _, ref = _providers.loss_functions(fusedloss, loss)
        case = _cases.Case(loss, (2, 4, 8, 8), "float32", "uint8", _cases.FWD_BWD, variant=variant)
        return _providers.variant_options(functional, ref, case)

    assert options("dice", "") == ({}, {})
    assert options("dice", "probabilities") == ({"activation": "none"}, {"from_logits": False})
    assert options("dice_bce", "probabilities") == ({"activation": "none"}, {"from_logits": False, "clamped_log": True})
    assert options("dice_focal", "probabilities")[1] == {"from_logits": False, "clamped_log": True}
    assert options("focal", "probabilities")[1] == {"from_logits": False, "clamped_log": True}
    assert options("multiclass_dice_focal", "probabilities") == ({"activation": "none"}, {"from_logits": False})
    assert options("dice_ce", "squared_pred") == ({"squared_pred": True}, {"squared_pred": True})
    functional, _, ref = _providers.loss_functions(fusedloss, "multiclass_dice_focal")
    assert (functional, ref) == (fusedloss.dice_focal_loss, reference.multiclass_dice_focal_loss)

    calls = []

    class Recording:  # fusedloss, with its functions recording what they are called with
        def __getattr__(self, name):
            return getattr(fusedloss, name)

        def _record(self, function):
            def recorded(input, target, **kwargs):
                calls.append((function.__name__, kwargs))
                return function(input, target, **kwargs)

            recorded.__signature__ = inspect.signature(function)
            recorded.__name__ = function.__name__
            return recorded

        @property
        def LOSSES(self):  # noqa: N802
            return {name: self._record(function) for name, function in fusedloss.LOSSES.items()}

        @property
        def MULTICLASS_LOSSES(self):  # noqa: N802
            return {name: self._record(function) for name, function in fusedloss.MULTICLASS_LOSSES.items()}

    device = torch.device("cpu")
    fused = _providers.Provider("reference", _providers.FUSED, Recording(), device)
    for loss, shape in (("dice_bce", (1, 1, 8, 8)), ("multiclass_dice", (2, 4, 8, 8))):
        case = _cases.Case(loss, shape, "float32", "uint8", _cases.FWD_BWD, variant="probabilities")
        fused.loss_fn(case)(*_cases.make_inputs(case, device))
    assert calls == [("dice_bce_loss", {"backend": "reference", "activation": "none"}),
                     ("dice_loss", {"backend": "reference", "mode": "multiclass", "activation": "none"})]


def test_variant_rows_agree_with_eager(monkeypatch):
    # Tiny variant cases through _run.measure, as main.py runs them: every provider's loss
    # agrees with eager's, and the rows and keys carry the variant. torch.compile is
    # replaced by the function itself (compiling takes a minute on a few cores): what is
    # checked is what the compile provider passes, not Inductor.
    import merge_results

    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fusedloss = _fusedloss()
    providers, _ = _providers.resolve_providers(fusedloss, device, None)
    timing = _cases.Timing(warmup=0, repeats=1, min_repeats=1, max_seconds=0.0)
    binary, multiclass = (1, 1, 64, 64), (2, 8, 16, 16)
    cases = [_cases.Case(loss, shape, "float32", "uint8", _cases.FWD_BWD, variant=variant)
             for loss, shape in (("dice_bce", binary), ("dice_focal", binary), ("dice_ce", multiclass),
                                 ("multiclass_dice_focal", multiclass))
             for variant in ("", "probabilities", "squared_pred")]
    rows = [_run.measure(case, provider, device, timing, 1e9) for case in cases for provider in providers]
    _report.add_comparisons(rows)

    eager = {(row["loss"], row["variant"]): row for row in rows if row["provider"] == "eager"}
    for loss, _ in eager:
        plain, probabilities, squared = (eager[(loss, variant)]["loss_value"]
                                         for variant in ("", "probabilities", "squared_pred"))
        # the same logits, given as probabilities with activation='none': the same loss
        assert probabilities == pytest.approx(plain, rel=1e-4), loss
        assert squared != pytest.approx(plain, rel=1e-3), loss
    failed = []
    for row in rows:
        assert row["variant"] in ("", "probabilities", "squared_pred")
        if row["provider"] in ("eager", "compile"):
            assert row["status"] == "ok", row
        elif row["status"] != "ok":  # a fused kernel without the option (yet)
            failed.append(f"{row['provider']} {row['loss']} {row['variant']}: {row['note']}")
            continue
        assert row["loss_value"] == pytest.approx(eager[(row["loss"], row["variant"])]["loss_value"], rel=1e-3), row
        assert " vs eager " not in row["note"] and row["speedup_vs_eager"] is not None, row
    keys = {(_report._case_key(row), row["provider"]) for row in rows}
    assert len(keys) == len(rows)  # no two rows of a provider share a key: the variant is in it

    # merged with a run written before variants (rows without the key): its rows pair
    # with the plain rows only
    old = [{key: value for key, value in row.items() if key != "variant"} for row in rows if row["variant"] == ""]
    for row in old:
        row["provider"] = "compile" if row["provider"] == "eager" else row["provider"] + "_old"
    new = [dict(row) for row in rows if row["provider"] != "compile"]
    _, merged, _ = merge_results.merge([{"meta": {}, "rows": new}, {"meta": {}, "rows": old}])
    for row in merged:
        has_compile = row["variant"] == "" and row["status"] == "ok"
        assert (row["speedup_vs_compile"] is not None) == has_compile, row
    if failed:
        pytest.skip("fused rows that did not run: " + "; ".join(failed))
