"""sync=True: statistics summed over ranks with torch.distributed (gloo,
processes on the test device) give every rank the loss of the whole batch, and
each rank the whole-batch gradient of its own shard."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fusedloss
import fusedloss.ops.synced
from helpers import FUSED_BACKENDS, IGNORE, assert_close, make_class_pair, make_pair

SYNC_BACKENDS = FUSED_BACKENDS + ["reference"]

CASES = {
    "dice_per_channel": ("sigmoid", lambda b: fusedloss.DiceLoss(per_channel=True, weight=[0.5, 2.0, 1.0],
                                                                 sync=True, backend=b)),
    "tversky": ("sigmoid", lambda b: fusedloss.TverskyLoss(0.3, 0.7, sync=True, backend=b)),
    "multiclass_dice": ("softmax", lambda b: fusedloss.DiceLoss(mode="multiclass", ignore_index=IGNORE,
                                                                exclude_empty=True, include_background=False,
                                                                sync=True, backend=b)),
    "multiclass_focal_tversky": ("softmax", lambda b: fusedloss.FocalTverskyLoss(gamma=1.5, mode="multiclass",
                                                                                 ignore_index=IGNORE, sync=True,
                                                                                 backend=b)),
}


def _batch(family):
    # 6 samples: shards of 3 or 2 samples for 2 or 3 ranks.
    if family == "sigmoid":
        return make_pair((6, 3, 9, 8), torch.float64)
    return make_class_pair((6, 4, 7, 9), torch.float64, ignore_fraction=0.1, absent=(2,))


def _worker(rank, world_size, init_file, case, backend):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
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
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", SYNC_BACKENDS)
@pytest.mark.parametrize("case, world_size", [(case, 2) for case in sorted(CASES)] + [("dice_per_channel", 3)])
def test_synced_statistics_equal_the_whole_batch(tmp_path, case, backend, world_size):
    mp.spawn(_worker, args=(world_size, str(tmp_path / "init"), case, backend), nprocs=world_size, join=True)


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
