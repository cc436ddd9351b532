"""CI smoke test of the benchmark: bench/main.py's entry point, in-process, smoke preset.

Runs binary dice and focal at 64K elements (fp32 logits and target) and multi-class
multiclass_dice and multiclass_focal at 2x8x64x64 (fp32 logits, uint8 class map), eager plus every fused
backend (on a CPU-only machine the Triton kernels through the interpreter), then checks
the written reports and that the fused path keeps less memory for backward than the
eager reference. Other tests check, without measuring, which cases loss names select and
where the variant rows fall; what each function of a variant case is called with; and
others run tiny variant cases (the options, a one-hot target, Dice+CE's class weights and
label smoothing, Generalized Dice) through every provider (torch.compile stubbed) against eager;
two do the same for the Lovász rows (their groups, per_sample, their floor; tiny cases through
every provider, smp's LovaszLoss included).
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
        late = [index for index, case in enumerate(cases)
                if case.variant or "dice_focal" in case.loss or "generalized_dice" in case.loss or case.lovasz]
        assert late == list(range(len(cases) - len(late), len(cases))), device
        assert {(case.loss, case.variant) for case in cases[late[0]:]} == {
            ("dice", "probabilities"), ("dice", "squared_pred"), ("dice_bce", "probabilities"),
            ("dice_bce", "squared_pred"), ("dice_focal", ""), ("multiclass_dice", "probabilities"),
            ("dice_ce", "probabilities"), ("multiclass_dice_focal", ""), ("multiclass_dice", "one_hot"),
            ("dice_ce", "one_hot"), ("dice_ce", "ce_options"), ("multiclass_generalized_dice", ""),
            ("generalized_dice", ""), ("lovasz_hinge", ""), ("lovasz_hinge", "per_sample"), ("lovasz_softmax", "")}
        # the dense targets, Dice+CE's options and Generalized Dice come after the variant
        # groups, and the Lovász rows last of all (a time budget cuts them first)
        assert [case.label for case in cases[-8:]] == [
            "multiclass_dice 4x19x256x256 one_hot float32/uint8 fwd+bwd",
            "dice_ce 4x19x256x256 one_hot float32/uint8 fwd+bwd",
            "dice_ce 4x19x256x256 ce_options float32/uint8 fwd+bwd",
            "multiclass_generalized_dice 4x19x256x256 float32/uint8 fwd+bwd",
            "generalized_dice 2x4x128x128x128 float32/uint8 fwd+bwd",
            "lovasz_hinge 16x1x512x512 float32/uint8 fwd+bwd",
            "lovasz_hinge 16x1x512x512 per_sample float32/uint8 fwd+bwd",
            "lovasz_softmax 4x19x256x256 float32/uint8 fwd+bwd"], device
        for case in cases:
            assert case.label.count(" ") == (4 if case.variant else 3) + (case.layout != "contiguous"), case.label
    plain = _cases.Case("dice", (16, 1, 512, 512), "float32", "uint8", _cases.FWD_BWD)
    squared = _cases.Case("dice", (16, 1, 512, 512), "float32", "uint8", _cases.FWD_BWD, variant="squared_pred")
    assert plain.label == "dice 16x1x512x512 float32/uint8 fwd+bwd"
    assert squared.label == "dice 16x1x512x512 squared_pred float32/uint8 fwd+bwd"
    assert squared.floor_bytes == plain.floor_bytes and squared.options == {"squared_pred": True}
    # a loss without the option is left out of that variant (focal has no squared_pred)
    focal = _plan.make_plan("quick", "cpu", "focal,multiclass_focal")
    assert {case.variant for case in focal.cases} == {"", "probabilities", "one_hot"}
    assert {case.loss for case in focal.cases if case.variant == "one_hot"} == {"multiclass_focal"}
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
    device = torch.device("cpu")
    fused = _providers.Provider("reference", _providers.FUSED, _Recording(fusedloss, calls), device)
    for loss, shape in (("dice_bce", (1, 1, 8, 8)), ("multiclass_dice", (2, 4, 8, 8))):
        case = _cases.Case(loss, shape, "float32", "uint8", _cases.FWD_BWD, variant="probabilities")
        fused.loss_fn(case)(*_cases.make_inputs(case, device))
    assert calls == [("dice_bce_loss", {"backend": "reference", "activation": "none"}),
                     ("dice_loss", {"backend": "reference", "mode": "multiclass", "activation": "none"})]


class _Recording:
    """fusedloss, with its loss functions recording in `calls` what they are called with."""

    def __init__(self, fusedloss, calls):
        self._fusedloss, self._calls = fusedloss, calls

    def __getattr__(self, name):
        return getattr(self._fusedloss, name)

    def _record(self, function):
        def recorded(input, target, **kwargs):
            self._calls.append((function.__name__, kwargs))
            return function(input, target, **kwargs)

        recorded.__signature__ = inspect.signature(function)
        recorded.__name__ = function.__name__
        return recorded

    @property
    def LOSSES(self):  # noqa: N802
        return {name: self._record(function) for name, function in self._fusedloss.LOSSES.items()}

    @property
    def MULTICLASS_LOSSES(self):  # noqa: N802
        return {name: self._record(function) for name, function in self._fusedloss.MULTICLASS_LOSSES.items()}

    @property
    def generalized_dice_loss(self):
        return self._record(self._fusedloss.generalized_dice_loss)


def test_variant_rows_agree_with_eager(monkeypatch):
    # Tiny variant cases through _run.measure, as main.py runs them: every provider's loss
    # agrees with eager's, and the rows and keys carry the variant. torch.compile is
    # replaced by the function itself (compiling takes a minute on a few cores): what is
    # checked is what the compile provider passes, not Inductor.
    import merge_results

    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fusedloss = _fusedloss()
    providers = [provider for provider in _providers.resolve_providers(fusedloss, device, None)[0]
                 if provider.kind != _providers.PEER]  # the peers have no variant rows: test_peer_rows_agree_with_eager
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


def test_dense_target_case_and_its_floor():
    # Measures nothing: a one_hot case's target is (N, C, *spatial) in its own dtype, read as
    # C*s_t bytes per pixel (twice for fwd+bwd), and its label and key carry the variant.
    shape = (4, 19, 256, 256)
    plain = _cases.Case("multiclass_dice", shape, "float32", "uint8", _cases.FWD_BWD)
    dense = _cases.Case("multiclass_dice", shape, "float32", "uint8", _cases.FWD_BWD, variant="one_hot")
    numel, pixels = plain.numel, plain.numel // 19
    assert (plain.target_shape, plain.target_numel) == ((4, 256, 256), pixels)
    assert (dense.target_shape, dense.target_numel, dense.classes) == (shape, numel, 19)
    assert dense.dense_target and not plain.dense_target and dense.options == {}
    assert plain.floor_bytes == 12 * numel + 2 * pixels
    assert dense.floor_bytes == 12 * numel + 2 * 19 * pixels  # 3*4 + 2*C*1 bytes per pixel and class
    forward = _cases.Case("dice_ce", shape, "bfloat16", "float32", _cases.FWD, variant="one_hot")
    assert forward.floor_bytes == 2 * numel + 4 * numel
    assert dense.label == "multiclass_dice 4x19x256x256 one_hot float32/uint8 fwd+bwd"
    row = _run.base_row(dense, _providers.Provider("eager", _providers.EAGER, None, torch.device("cpu")))
    assert (row["variant"], row["target_shape"], row["floor_bytes"]) == ("one_hot", "4x19x256x256", dense.floor_bytes)
    assert _report._case_key(row) != _report._case_key(_run.base_row(plain, _providers.Provider(
        "eager", _providers.EAGER, None, torch.device("cpu"))))
    # a dense target is float, bool or uint8 (not a class-map dtype); one_hot is multi-class only;
    # ce_options is dice_ce's; Generalized Dice has no squared_pred and needs C > 1 channels
    for target_dtype in ("float32", "bool", "float16"):
        _cases.Case("dice_ce", shape, "float32", target_dtype, _cases.FWD_BWD, variant="one_hot")
    with pytest.raises(ValueError, match="one-hot target"):
        _cases.Case("dice_ce", shape, "float32", "int64", _cases.FWD_BWD, variant="one_hot")
    for loss, variant in (("dice", "one_hot"), ("multiclass_dice", "ce_options"),
                          ("multiclass_generalized_dice", "squared_pred")):
        with pytest.raises(ValueError, match="no variant"):
            _cases.Case(loss, shape, "float32", "uint8", _cases.FWD_BWD, variant=variant)
    assert _cases.loss_family("generalized_dice") == "binary"
    assert _cases.loss_family("multiclass_generalized_dice") == "multiclass"
    known = _providers.known_losses(_fusedloss())
    assert known.index("generalized_dice") < known.index("multiclass_dice") < known.index(
        "multiclass_generalized_dice")
    full = _plan.make_plan("full", "cpu", "generalized_dice,multiclass_dice")
    assert {case.shape[1] for case in full.cases if case.loss == "generalized_dice"} == {4}  # seg3d, 67M, 268M
    assert {case.variant for case in full.cases if case.loss == "multiclass_dice"} >= {"", "one_hot"}

    # make_inputs: the one-hot of the plain case's class map, in the case's dtype
    tiny = _cases.Case("dice_ce", (2, 5, 4, 6), "float32", "uint8", _cases.FWD_BWD)
    _, labels = _cases.make_inputs(tiny, torch.device("cpu"))
    for target_dtype in ("uint8", "float32", "bool"):
        case = _cases.Case("dice_ce", (2, 5, 4, 6), "float32", target_dtype, _cases.FWD_BWD, variant="one_hot")
        logits, target = _cases.make_inputs(case, torch.device("cpu"))
        assert target.shape == logits.shape and target.dtype == _cases.DTYPES[target_dtype] and target.is_contiguous()
        counts = target.long()
        assert torch.equal(counts.argmax(1), labels.long()) and bool((counts.sum(1) == 1).all())


def test_target_options_reach_each_function_by_its_names():
    # Measures nothing: Generalized Dice maps to fusedloss.generalized_dice_loss (mode
    # 'multilabel' or 'multiclass') and to the reference with its positional multiclass flag;
    # ce_options' (C,) class weights are made once per (C, device), outside the timed call.
    fusedloss = _fusedloss()
    for loss, mode, multiclass in (("generalized_dice", "multilabel", False),
                                   ("multiclass_generalized_dice", "multiclass", True)):
        functional, options, reference = _providers.loss_functions(fusedloss, loss)
        assert functional is fusedloss.generalized_dice_loss and options == {"mode": mode}
        assert reference.func is fusedloss.reference.generalized_dice_loss
        assert reference.keywords == {"multiclass": multiclass}

    functional, _, reference = _providers.loss_functions(fusedloss, "dice_ce")
    case = _cases.Case("dice_ce", (2, 7, 8, 8), "float32", "uint8", _cases.FWD_BWD, variant="ce_options")
    public, internal = _providers.variant_options(functional, reference, case, torch.device("cpu"))
    assert public.keys() == internal.keys() == {"ce_class_weight", "label_smoothing"}
    assert public["label_smoothing"] == internal["label_smoothing"] == 0.1
    weight = public["ce_class_weight"]
    assert weight.shape == (7,) and weight.device.type == "cpu" and weight.dtype == torch.float32
    assert torch.allclose(weight, torch.linspace(0.5, 2.0, 7))
    assert internal["ce_class_weight"] is weight  # one tensor per case, shared by the providers
    assert case.call_options("cpu")["ce_class_weight"] is weight
    dense = _cases.Case("dice_ce", (2, 7, 8, 8), "float32", "uint8", _cases.FWD_BWD, variant="one_hot")
    assert _providers.variant_options(functional, reference, dense) == ({}, {})

    calls = []
    device = torch.device("cpu")
    fused = _providers.Provider("reference", _providers.FUSED, _Recording(fusedloss, calls), device)
    for loss, shape, variant in (("generalized_dice", (1, 3, 8, 8), ""),
                                 ("multiclass_generalized_dice", (2, 4, 8, 8), ""),
                                 ("dice_ce", (2, 4, 8, 8), "ce_options"), ("multiclass_dice", (2, 4, 8, 8), "one_hot")):
        case = _cases.Case(loss, shape, "float32", "uint8", _cases.FWD_BWD, variant=variant)
        fused.loss_fn(case)(*_cases.make_inputs(case, device))
    weight = calls[2][1].pop("ce_class_weight")
    assert weight.shape == (4,) and weight.device == device
    assert calls == [("generalized_dice_loss", {"backend": "reference", "mode": "multilabel"}),
                     ("generalized_dice_loss", {"backend": "reference", "mode": "multiclass"}),
                     ("dice_ce_loss", {"backend": "reference", "label_smoothing": 0.1}),
                     ("dice_loss", {"backend": "reference", "mode": "multiclass"})]


def test_target_option_rows_agree_with_eager(monkeypatch):
    # Tiny dense-target, ce_options and Generalized Dice cases through _run.measure, as
    # main.py runs them: every provider agrees with eager (torch.compile replaced by the
    # function itself), a one-hot target gives its class map's loss, and the compile provider
    # passes each case its own (C,) weights (two class counts through one compiled function).
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fusedloss = _fusedloss()
    providers = [provider for provider in _providers.resolve_providers(fusedloss, device, None)[0]
                 if provider.kind != _providers.PEER]  # the peers have no variant rows: test_peer_rows_agree_with_eager
    providers.append(_providers.Provider("reference", _providers.FUSED, fusedloss, device))  # the public code path
    timing = _cases.Timing(warmup=0, repeats=1, min_repeats=1, max_seconds=0.0)
    specs = [("multiclass_dice", (2, 6, 8, 8), "uint8", ""), ("multiclass_dice", (2, 6, 8, 8), "uint8", "one_hot"),
             ("dice_ce", (2, 6, 8, 8), "uint8", ""), ("dice_ce", (2, 6, 8, 8), "uint8", "one_hot"),
             ("dice_ce", (2, 6, 8, 8), "float32", "one_hot"), ("dice_ce", (2, 6, 8, 8), "uint8", "ce_options"),
             ("dice_ce", (1, 3, 8, 8), "uint8", "ce_options"),
             ("multiclass_generalized_dice", (2, 6, 8, 8), "uint8", ""),
             ("multiclass_generalized_dice", (2, 6, 8, 8), "uint8", "one_hot"),
             ("generalized_dice", (2, 3, 8, 8), "uint8", ""), ("generalized_dice", (2, 3, 8, 8), "float32", "")]
    cases = [_cases.Case(loss, shape, "float32", target_dtype, _cases.FWD_BWD, variant=variant)
             for loss, shape, target_dtype, variant in specs]
    rows = [_run.measure(case, provider, device, timing, 1e9) for case in cases for provider in providers]
    _report.add_comparisons(rows)

    def key(row):
        return row["loss"], row["shape"], row["target_dtype"], row["variant"]

    eager = {key(row): row for row in rows if row["provider"] == "eager"}
    for loss in ("multiclass_dice", "dice_ce", "multiclass_generalized_dice"):
        plain = eager[(loss, "2x6x8x8", "uint8", "")]["loss_value"]
        assert eager[(loss, "2x6x8x8", "uint8", "one_hot")]["loss_value"] == pytest.approx(plain, rel=1e-5), loss
    assert eager[("dice_ce", "2x6x8x8", "float32", "one_hot")]["loss_value"] == pytest.approx(
        eager[("dice_ce", "2x6x8x8", "uint8", "")]["loss_value"], rel=1e-5)
    assert eager[("dice_ce", "2x6x8x8", "uint8", "ce_options")]["loss_value"] != pytest.approx(
        eager[("dice_ce", "2x6x8x8", "uint8", "")]["loss_value"], rel=1e-3)
    failed = []
    for row in rows:
        case = next(case for case in cases if key(row) == (case.loss, case.shape_str, case.target_dtype, case.variant))
        assert (row["target_shape"], row["floor_bytes"]) == (case.target_shape_str, case.floor_bytes), row
        if row["variant"] == "one_hot":
            assert row["target_shape"] == row["shape"]
        if row["provider"] in ("eager", "compile", "reference"):
            assert row["status"] == "ok", row
        elif row["status"] != "ok":  # a fused kernel without the option or target (yet)
            failed.append(f"{row['provider']} {case.label}: {row['note'][:80]}")
            continue
        assert row["loss_value"] == pytest.approx(eager[key(row)]["loss_value"], rel=1e-3), row
        assert " vs eager " not in row["note"] and row["speedup_vs_eager"] is not None, row
    assert len({(_report._case_key(row), row["provider"]) for row in rows}) == len(rows)
    if failed:
        pytest.skip("fused rows that did not run: " + "; ".join(failed))


def test_peer_rows_agree_with_eager(monkeypatch):
    # smp's and MONAI's own classes on the rows they compute (bench/_peers.py), through
    # _run.measure as main.py runs them: each one's loss equals eager's, the rows carry the
    # "vs smp" / "vs MONAI" ratios, and they have no row for the losses and variants they lack.
    import _peers

    for peer in _peers.PEERS:
        if _peers.unavailable_reason(peer) is not None:
            pytest.skip(f"{_peers.unavailable_reason(peer)} (make test installs it)")
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    device = torch.device("cpu")
    fusedloss = _fusedloss()
    providers, _ = _providers.resolve_providers(fusedloss, device, ["eager", "cpu", "smp", "monai"])
    assert [provider.kind for provider in providers[-2:]] == [_providers.PEER] * 2
    timing = _cases.Timing(warmup=0, repeats=1, min_repeats=1, max_seconds=0.0)
    binary, multiclass = (2, 1, 16, 16), (2, 5, 8, 8)
    cases = [_cases.Case(loss, shape, "float32", target, _cases.FWD_BWD)
             for loss, shape, target in (("dice", binary, "float32"), ("focal", binary, "uint8"),
                                         ("dice_bce", binary, "uint8"), ("multiclass_dice", multiclass, "uint8"),
                                         ("dice_ce", (1, 4, 4, 6, 5), "int64"), ("iou", binary, "float32"))]
    rows = [_run.measure(case, provider, device, timing, 1e9) for case in cases for provider in providers]
    _report.add_comparisons(rows)
    eager = {row["loss"]: row["loss_value"] for row in rows if row["provider"] == "eager"}
    for row in rows:
        if row["loss"] == "iou" and row["provider"] in _peers.PEERS:
            assert row["status"] != "ok" and "no class for this row" in row["note"], row
            continue
        assert row["status"] == "ok", row
        assert row["loss_value"] == pytest.approx(eager[row["loss"]], rel=1e-4), row
        if row["provider"] == "cpu" and row["loss"] != "iou":
            assert row["speedup_vs_smp"] is not None and row["speedup_vs_monai"] is not None, row
    table = _report.format_table(rows)
    assert "vs smp" in table and "vs MONAI" in table


def test_lovasz_cases_and_their_floor():
    # Measures nothing: the Lovász losses run only in their own groups (asked for by name too,
    # never at the other shapes of their family), per_sample is their variant only, and their
    # floor is the fused path's passes with the sort at its minimum (bench/README.md).
    assert [case.label for case in _plan.make_plan("quick", "cpu", "lovasz_hinge,lovasz_softmax,dice").cases
            if case.lovasz] == ["lovasz_hinge 16x1x512x512 float32/uint8 fwd+bwd",
                                "lovasz_hinge 16x1x512x512 per_sample float32/uint8 fwd+bwd",
                                "lovasz_softmax 4x19x256x256 float32/uint8 fwd+bwd"]
    full = _plan.make_plan("full", "cpu")
    assert {case.shape for case in full.cases if case.lovasz} == {(16, 1, 512, 512), (4, 19, 256, 256)}
    assert {case.loss for case in _plan.make_plan("quick", "cpu", "dice").cases} == {"dice"}
    for loss, variant in (("lovasz_hinge", "squared_pred"), ("lovasz_hinge", "probabilities"),
                          ("dice", "per_sample"), ("multiclass_dice", "per_sample")):
        with pytest.raises(ValueError, match="no variant"):
            _cases.Case(loss, (2, 3, 8, 8), "float32", "uint8", _cases.FWD_BWD, variant=variant)

    hinge = _cases.Case("lovasz_hinge", (16, 1, 512, 512), "float32", "uint8", _cases.FWD_BWD)
    per_sample = _cases.Case("lovasz_hinge", (16, 1, 512, 512), "float32", "uint8", _cases.FWD_BWD,
                             variant="per_sample")
    numel = hinge.numel
    # fwd: x, t + 48 B per error; fwd+bwd: 4 x, 3 t + 72 B per error (fp32 errors, int32 order)
    assert hinge.floor_bytes == per_sample.floor_bytes == (4 * 4 + 3 * 1 + 72) * numel
    assert per_sample.options == {"per_sample": True} and hinge.target_shape == hinge.shape
    forward = _cases.Case("lovasz_hinge", (16, 1, 512, 512), "bfloat16", "float32", _cases.FWD)
    assert forward.floor_bytes == (2 + 4 + 48) * numel
    softmax = _cases.Case("lovasz_softmax", (4, 19, 256, 256), "float32", "uint8", _cases.FWD_BWD)
    pixels = softmax.target_numel
    assert softmax.multiclass and pixels * 19 == softmax.numel
    assert softmax.floor_bytes == (4 * 4 + 72) * softmax.numel + 3 * 1 * pixels
    int64 = _cases.Case("lovasz_softmax", (4, 19, 256, 256), "float32", "int64", _cases.FWD)
    assert int64.floor_bytes == (4 + 48) * softmax.numel + 8 * pixels

    fusedloss = _fusedloss()
    known = _providers.known_losses(fusedloss)
    assert known.index("lovasz_hinge") < known.index("multiclass_dice") < known.index("lovasz_softmax")
    for loss in ("lovasz_hinge", "lovasz_softmax"):
        functional, options, reference = _providers.loss_functions(fusedloss, loss)
        assert (functional, options, reference) == (getattr(fusedloss, f"{loss}_loss"), {},
                                                    getattr(fusedloss.reference, f"{loss}_loss"))
        assert _providers.variant_options(functional, reference, _cases.Case(
            loss, (2, 3, 8, 8), "float32", "uint8", _cases.FWD_BWD, variant="per_sample")) == (
            {"per_sample": True}, {"per_sample": True})


def test_lovasz_rows_agree_with_eager_and_smp(monkeypatch):
    # Tiny Lovász cases (the whole batch and per sample) through _run.measure, as main.py runs
    # them, through every provider (torch.compile replaced by the function itself, the public
    # functions' 'reference' backend, smp's LovaszLoss): each agrees with eager, the fused and
    # smp rows carry "vs smp", the C++ CPU backend saves less for backward than eager, and
    # MONAI (no Lovász loss) has no row.
    import _peers

    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    device = torch.device("cpu")
    fusedloss = _fusedloss()
    providers, _ = _providers.resolve_providers(fusedloss, device, None)
    providers.append(_providers.Provider("reference", _providers.FUSED, fusedloss, device))
    timing = _cases.Timing(warmup=0, repeats=1, min_repeats=1, max_seconds=0.0)
    cases = [_cases.Case(loss, shape, dtype, target, _cases.FWD_BWD, variant=variant)
             for loss, shape, dtype, target, variants in (
                 ("lovasz_hinge", (3, 1, 8, 8), "float32", "uint8", ("", "per_sample")),
                 ("lovasz_hinge", (2, 1, 8, 8), "bfloat16", "float32", ("",)),
                 ("lovasz_softmax", (2, 5, 6, 6), "float32", "uint8", ("", "per_sample")),
                 ("lovasz_softmax", (2, 5, 6, 6), "float32", "int64", ("",)))
             for variant in variants]
    pairs = [(case, provider) for case in cases for provider in providers]
    rows = [_run.measure(case, provider, device, timing, 1e9) for case, provider in pairs]
    _report.add_comparisons(rows)
    eager = {case: row["loss_value"] for (case, _), row in zip(pairs, rows) if row["provider"] == "eager"}
    eager_memory = {case: row["extra_mem_bytes"] for (case, _), row in zip(pairs, rows) if row["provider"] == "eager"}
    assert len(eager) == len(cases)
    assert eager[cases[0]] != pytest.approx(eager[cases[1]], rel=1e-4)  # per_sample: another loss
    smp = _peers.unavailable_reason("smp") is None
    failed = []
    for (case, _), row in zip(pairs, rows):
        assert (row["floor_bytes"], row["variant"]) == (case.floor_bytes, case.variant), row
        if row["provider"] == "monai":
            assert row["status"] == "skipped" and "no class for this row" in row["note"], row
            continue
        if row["provider"] == "cpu" and row["status"] == "skipped":  # an extension built before the Lovász ops
            assert "no Lovász kernels" in row["note"], row
            failed.append(row["note"])
            continue
        assert row["status"] == "ok", row
        assert row["loss_value"] == pytest.approx(eager[case], rel=1e-4, abs=1e-6), row
        if row["provider"] == "cpu":  # the fused path keeps only the order for backward
            assert row["extra_mem_bytes"] < eager_memory[case], row
        assert " vs eager " not in row["note"] and (row["speedup_vs_smp"] is not None) == smp, row
    assert {row["provider"] for row in rows if row["status"] == "ok"} >= {"eager", "compile", "reference"}
    if failed:
        pytest.skip("; ".join(dict.fromkeys(failed)))
