"""sync=True: statistics summed over ranks with torch.distributed (gloo,
processes on the test device) give every rank the loss of the whole batch, and
each rank the whole-batch gradient of its own shard. Dice+BCE and Dice+CE sum
only their region (Dice) statistics: the element term (BCE, CE) stays the
rank's own mean."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import DEVICE, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, IGNORE, assert_close, make_class_pair, make_pair

import fusedloss
import fusedloss.ops.synced

SYNC_BACKENDS = FUSED_BACKENDS + ["reference"]

CASES = {
    # The weight made on the test device, like the input (a CPU weight with CUDA input is refused).
    "dice_per_channel": (
        "binary",
        lambda b: fusedloss.DiceLoss(
            per_channel=True, weight=torch.tensor([0.5, 2.0, 1.0], device=DEVICE), sync=True, backend=b
        ),
    ),
    "tversky": ("binary", lambda b: fusedloss.TverskyLoss(0.3, 0.7, sync=True, backend=b)),
    "multiclass_dice": (
        "multiclass",
        lambda b: fusedloss.DiceLoss(
            mode="multiclass", ignore_index=IGNORE, exclude_empty=True, include_background=False, sync=True, backend=b
        ),
    ),
    "multiclass_focal_tversky": (
        "multiclass",
        lambda b: fusedloss.FocalTverskyLoss(gamma=1.5, mode="multiclass", ignore_index=IGNORE, sync=True, backend=b),
    ),
}


def _batch(family):
    # 6 samples: shards of 3 or 2 samples for 2 or 3 ranks.
    if family == "binary":
        return make_pair((6, 3, 9, 8), torch.float64)
    return make_class_pair((6, 4, 7, 9), torch.float64, ignore_fraction=0.1, absent=(2,))


def _worker(rank, world_size, init_file, runs):
    """Every (case, backend) of ``runs`` in one process group: starting processes is the slow part."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for case, backend in runs:
            try:
                _check_synced(rank, world_size, case, backend)
            except AssertionError as error:
                raise AssertionError(f"{case} backend={backend} rank={rank} of {world_size}: {error}") from None
    finally:
        dist.destroy_process_group()


def _check_synced(rank, world_size, case, backend):
    family, make = CASES[case]
    criterion = make(backend)
    x, t = _batch(family)
    full = x.clone().requires_grad_(True)
    unsynced = {**criterion.options, "sync": False, "backend": "reference"}
    loss_fn = type(criterion).loss_fn
    weight = {} if criterion.weight is None else {"weight": criterion.weight}
    full_loss = loss_fn(full, t, **unsynced, **weight)
    (full_grad,) = torch.autograd.grad(full_loss, full)

    shard = slice(rank * x.shape[0] // world_size, (rank + 1) * x.shape[0] // world_size)
    mine = x[shard].clone().requires_grad_(True)
    loss = criterion(mine, t[shard])
    (grad,) = torch.autograd.grad(loss, mine)
    assert_close(loss.detach(), full_loss.detach(), torch.float64)
    assert_close(grad, full_grad[shard], torch.float64)


# Every case on every backend with 2 ranks; shards of unequal sizes with 3.
WORLDS = {2: [(case, backend) for case in sorted(CASES) for backend in SYNC_BACKENDS],
          3: [("dice_per_channel", backend) for backend in SYNC_BACKENDS]}


@pytest.mark.parametrize("world_size", sorted(WORLDS))
def test_synced_statistics_equal_the_whole_batch(tmp_path, world_size):
    mp.spawn(_worker, args=(world_size, str(tmp_path / "init"), WORLDS[world_size]), nprocs=world_size, join=True)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_forward_in_two_halves_equals_the_fused_forward(monkeypatch, case, backend):
    """The *_stats and *_finalize ops on their own (a world of one: the all-reduce
    leaves the sums as they are) give the fused op's loss and gradient."""
    monkeypatch.setattr(fusedloss.ops.synced, "_all_reduce", lambda tensor, group: tensor)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    family, make = CASES[case]
    criterion = make(backend)
    x, t = _batch(family)
    loss_fn = type(criterion).loss_fn
    weight = {} if criterion.weight is None else {"weight": criterion.weight}
    expected_x = x.clone().requires_grad_(True)
    expected = loss_fn(expected_x, t, **{**criterion.options, "sync": False}, **weight)
    (expected_grad,) = torch.autograd.grad(expected, expected_x)
    halves_x = x.clone().requires_grad_(True)
    halves = loss_fn(halves_x, t, **{**criterion.options, "process_group": "a world of one"}, **weight)
    (halves_grad,) = torch.autograd.grad(halves, halves_x)
    assert_close(halves.detach(), expected.detach(), torch.float64)
    assert_close(halves_grad, expected_grad, torch.float64)


def test_sync_needs_an_initialised_process_group_and_no_per_sample():
    x, t = make_pair((2, 3, 4))
    with pytest.raises(ValueError, match="sync=True needs torch.distributed initialised"):
        fusedloss.dice_loss(x, t, sync=True)
    with pytest.raises(ValueError, match="per_sample groups are whole on their own rank"):
        fusedloss.dice_loss(x, t, sync=True, per_sample=True)
    with pytest.raises(ValueError, match="process_group is used with sync=True only"):
        fusedloss.dice_loss(x, t, process_group=object())


def _auto_worker(rank, world_size, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        x, t = make_pair((2, 3, 4), torch.float64)
        auto = fusedloss.dice_loss(x, t, sync=True)  # 'auto': the C++ backend on CPU when built
        assert_close(auto, fusedloss.dice_loss(x, t, sync=True, backend="reference"), torch.float64)
    finally:
        dist.destroy_process_group()


def test_auto_synchronises(tmp_path):
    mp.spawn(_auto_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


# ---- Dice+BCE and Dice+CE: the region term synchronised, the element term per rank ----
# Each config: the call's keyword arguments, a `weight` as a list (made on the test device in
# the worker). Tiny shapes: these run under the Triton interpreter in CI. One process group
# per loss, every backend run in it.
COMBINED_CONFIGS = {
    "dice_bce": [dict(smooth=1.0, dice_weight=0.7, bce_weight=1.3),
                 dict(smooth=0.5, per_channel=True, weight=[0.5, 2.0])],
    "dice_ce": [
        dict(smooth=1.0, dice_weight=0.7, ce_weight=1.3, ignore_index=IGNORE),
        dict(
            smooth=0.5, weight=[1.0, 0.5, 2.0, 1.5], ignore_index=IGNORE, include_background=False, exclude_empty=True
        ),
    ],
}


def _combined_batch(loss):
    # 4 samples: 2 per rank; the shards' BCE (CE) means differ.
    if loss == "dice_bce":
        return make_pair((4, 2, 5, 3), torch.float64, seed=1)
    return make_class_pair((4, 4, 3, 5), torch.float64, ignore_fraction=0.15, absent=(2,), seed=1)


def _combined_expected(loss, x, t, shard, weight, options, element_over="rank"):
    """From the reference in one process: dice_weight * the Dice of the whole batch +
    element_weight * the element term's mean over the rank's shard (``element_over=
    'batch'``: over the whole batch, which a wrong sync would give), and its gradient
    w.r.t. the shard."""
    options = dict(options)
    smooth = options.pop("smooth", 1.0)
    options.update(smooth_nr=smooth, smooth_dr=smooth)  # the reference's names
    full = x.clone().requires_grad_(True)
    mine = full[shard] if element_over == "rank" else full
    target = t[shard] if element_over == "rank" else t
    if loss == "dice_bce":
        dice_weight, element_weight = options.pop("dice_weight", 1.0), options.pop("bce_weight", 1.0)
        dice = fusedloss.reference.dice_loss(full, t, weight=weight, **options)
        bce = F.binary_cross_entropy_with_logits(mine, target.to(mine.dtype), reduction="none")  # not in fp32
        if options.get("per_channel"):  # a mean per channel group, weighted like the Dice of the channel
            element = bce.transpose(0, 1).reshape(bce.shape[1], -1).mean(1)
            element = (element * weight.to(element.dtype)).mean() if weight is not None else element.mean()
        else:
            element = bce.mean()
    else:
        dice_weight, element_weight = options.pop("dice_weight", 1.0), options.pop("ce_weight", 1.0)
        dice = fusedloss.reference.multiclass_dice_loss(full, t, weight=weight, **options)
        element = F.cross_entropy(mine, target.long(), ignore_index=options["ignore_index"])  # mean over counted pixels
    expected = dice_weight * dice + element_weight * element
    (grad,) = torch.autograd.grad(expected, full)
    return expected.detach(), grad[shard]


def _distinguishable(actual, other, dtype):
    try:
        assert_close(actual, other, dtype)
    except AssertionError:
        return True
    return False


def _combined_worker(rank, world_size, init_file, loss, backends):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        x, t = _combined_batch(loss)
        shard = slice(rank * x.shape[0] // world_size, (rank + 1) * x.shape[0] // world_size)
        function = fusedloss.dice_bce_loss if loss == "dice_bce" else fusedloss.dice_ce_loss
        for config in COMBINED_CONFIGS[loss]:
            config = dict(config)
            weight = config.pop("weight", None)
            weight = None if weight is None else torch.tensor(weight, device=DEVICE)
            expected, expected_grad = _combined_expected(loss, x, t, shard, weight, config)
            # The check can fail: an element term summed over ranks gives other numbers.
            wrong, wrong_grad = _combined_expected(loss, x, t, shard, weight, config, element_over="batch")
            assert _distinguishable(expected, wrong, torch.float64), (loss, config)
            assert _distinguishable(expected_grad, wrong_grad, torch.float64), (loss, config)
            for backend in backends:
                mine = x[shard].clone().requires_grad_(True)
                value = function(mine, t[shard], weight=weight, sync=True, backend=backend, **config)
                (grad,) = torch.autograd.grad(value, mine)
                where = f"{loss} {config} backend={backend} rank={rank}"
                try:
                    assert_close(value.detach(), expected, torch.float64)
                    assert_close(grad, expected_grad, torch.float64)
                except AssertionError as error:
                    raise AssertionError(f"{where}: {error}") from None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("loss", sorted(COMBINED_CONFIGS))
def test_synced_region_term_with_element_term_per_rank(tmp_path, loss):
    """Dice+BCE / Dice+CE with sync=True on 2 ranks: each rank's loss is the Dice of the
    whole batch plus its own shard's BCE (CE) mean, and its gradient that loss's gradient
    w.r.t. its shard, on every fused backend of the test device and the reference."""
    backends = (FUSED_BACKENDS if loss == "dice_bce" else FUSED_MULTICLASS_BACKENDS) + ["reference"]
    mp.spawn(_combined_worker, args=(2, str(tmp_path / "init"), loss, backends), nprocs=2, join=True)
