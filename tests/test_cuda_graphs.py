"""CUDA graphs: the GPU path makes no host sync and allocates only through the
caching allocator, so a training step with the loss can be captured and
replayed, and torch.compile(mode='reduce-overhead') works. GPU only."""

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, assert_close, make_class_pair, make_pair

import fusedloss

pytestmark = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a CUDA GPU")

CRITERIA = {"dice": lambda b: (fusedloss.DiceLoss(per_channel=True, backend=b), "binary"),
            "focal": lambda b: (fusedloss.FocalLoss(backend=b), "binary"),
            "dice_bce": lambda b: (fusedloss.DiceBCELoss(backend=b), "binary"),
            "dice_ce": lambda b: (fusedloss.DiceCELoss(ignore_index=255, backend=b), "multiclass")}


def _inputs(family):
    if family == "binary":
        return make_pair((4, 3, 64, 64), torch.float32, torch.uint8)
    return make_class_pair((4, 5, 64, 64), torch.float32, torch.uint8, ignore_fraction=0.1)


def _backends(family):
    return FUSED_BACKENDS if family == "binary" else FUSED_MULTICLASS_BACKENDS


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_capture_and_replay_a_training_step(name):
    for backend in _backends(CRITERIA[name]("auto")[1]):
        criterion, family = CRITERIA[name](backend)
        x, t = _inputs(family)
        conv = torch.nn.Conv2d(x.shape[1], x.shape[1], 3, padding=1).to(DEVICE)
        static_x = x.clone()

        def step():
            conv.zero_grad(set_to_none=False)
            loss = criterion(conv(static_x), t)
            loss.backward()
            return loss

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up (Triton compiles, allocator settles) outside the capture
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = step()
        for seed in range(2):
            static_x.copy_(_inputs(family)[0] * (1 + seed))
            graph.replay()
            replayed_loss, replayed_grad = static_loss.clone(), conv.weight.grad.clone()
            conv.zero_grad()
            eager_loss = criterion(conv(static_x), t)
            eager_loss.backward()
            assert_close(replayed_loss, eager_loss.detach(), torch.float32)
            assert_close(replayed_grad, conv.weight.grad, torch.float32)


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_compile_reduce_overhead(name):
    for backend in _backends(CRITERIA[name]("auto")[1]):
        torch._dynamo.reset()
        criterion, family = CRITERIA[name](backend)
        x, t = _inputs(family)

        def loss_of(logits):
            return criterion(logits, t)

        compiled = torch.compile(loss_of, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):
            got = compiled(x)
        assert_close(got, loss_of(x), torch.float32)
