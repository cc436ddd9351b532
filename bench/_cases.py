"""What is measured: benchmark cases, the presets that list them, their inputs and their byte floor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FWD_BWD = "fwd+bwd"
FWD = "fwd"

# Shapes by a short name; numel in the comment. The two realistic segmentation shapes
# are a 2-D binary batch (16x1x512x512) and a 3-D multi-class volume (2x4x128x128x128).
SHAPES = {
    "64K": (1, 1, 256, 256),  # 65,536
    "256K": (4, 1, 256, 256),  # 262,144
    "1M": (4, 1, 512, 512),  # 1,048,576
    "seg2d": (16, 1, 512, 512),  # 4,194,304
    "seg3d": (2, 4, 128, 128, 128),  # 16,777,216
    "67M": (16, 4, 1024, 1024),  # 67,108,864
    "268M": (16, 4, 2048, 2048),  # 268,435,456
}

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


@dataclass(frozen=True)
class Case:
    loss: str  # key of fusedloss.LOSSES
    shape: tuple[int, ...]
    dtype: str  # logits dtype, a key of DTYPES
    target_dtype: str
    mode: str  # FWD_BWD or FWD

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def shape_str(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def input_itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def target_itemsize(self) -> int:
        return DTYPES[self.target_dtype].itemsize

    @property
    def floor_bytes(self) -> int:
        """Fewest bytes the op must move through memory.

        Forward reads input and target once; backward reads them again and writes the
        gradient (same dtype as the input): 3*s_x + 2*s_t per element. Forward only:
        s_x + s_t.
        """
        if self.mode == FWD_BWD:
            per_element = 3 * self.input_itemsize + 2 * self.target_itemsize
        else:
            per_element = self.input_itemsize + self.target_itemsize
        return self.numel * per_element

    @property
    def label(self) -> str:
        return f"{self.loss} {self.shape_str} {self.dtype}/{self.target_dtype} {self.mode}"

    def rough_peak_bytes(self) -> int:
        """Generous estimate of the memory one run needs (inputs, gradient, eager temporaries).

        Used only to skip cases that cannot fit; eager reference temporaries are counted as
        a handful of fp32 full-size tensors.
        """
        per_element = 2 * self.input_itemsize + self.target_itemsize + 12 * 4
        return self.numel * per_element


@dataclass(frozen=True)
class CaseGroup:
    """A block of a preset: every shape x every (dtype, target dtype) x every mode."""

    shapes: tuple[str, ...]
    dtype_pairs: tuple[tuple[str, str], ...]
    modes: tuple[str, ...]


@dataclass(frozen=True)
class Timing:
    warmup: int  # calls after the first (compiling) one, before timing
    repeats: int  # most timed calls
    min_repeats: int  # fewest timed calls, even past max_seconds
    max_seconds: float  # stop repeating once this much time was measured


@dataclass(frozen=True)
class Preset:
    name: str
    groups: tuple[CaseGroup, ...]
    timing: Timing
    losses: tuple[str, ...] | None = None  # None: every built-in loss
    providers: tuple[str, ...] | None = None  # None: every provider that can run


_ALL_PAIRS = tuple((d, t) for d in ("float32", "bfloat16", "float16") for t in ("float32", "uint8"))

# Presets per device type. "quick" is what `make bench` runs. Its groups run in order of
# interest, so a run cut short by a time budget keeps the most useful rows: the two
# realistic shapes, then the dtype matrix at the 2-D shape (20, 14 and 8 floor bytes per
# element), then the rest of the size sweep, then forward only. Kept small because every
# new (loss, dtype, rank, target dtype, mode) costs the compile provider a recompile.
_PRESETS = {
    ("smoke", "cpu"): Preset(
        name="smoke",
        groups=(CaseGroup(("64K",), (("float32", "float32"),), (FWD_BWD,)),),
        timing=Timing(warmup=1, repeats=3, min_repeats=2, max_seconds=1.0),
        losses=("dice", "focal"),
        providers=("eager", "fused"),
    ),
    ("quick", "cpu"): Preset(
        name="quick",
        groups=(
            CaseGroup(("seg2d", "seg3d"), (("float32", "float32"),), (FWD_BWD,)),
            CaseGroup(("seg2d",), (("bfloat16", "uint8"),), (FWD_BWD,)),
            CaseGroup(("64K",), (("float32", "float32"),), (FWD_BWD,)),
            CaseGroup(("seg2d",), (("float32", "float32"),), (FWD,)),
        ),
        timing=Timing(warmup=1, repeats=7, min_repeats=3, max_seconds=1.5),
    ),
    ("quick", "cuda"): Preset(
        name="quick",
        groups=(
            CaseGroup(("seg2d", "seg3d"), (("float32", "float32"),), (FWD_BWD,)),
            CaseGroup(("seg2d",), (("bfloat16", "uint8"), ("float16", "uint8"), ("float32", "uint8")), (FWD_BWD,)),
            CaseGroup(("64K", "67M"), (("float32", "float32"),), (FWD_BWD,)),
            CaseGroup(("seg2d",), (("float32", "float32"),), (FWD,)),
        ),
        timing=Timing(warmup=5, repeats=50, min_repeats=10, max_seconds=0.25),
    ),
    ("full", "cpu"): Preset(
        name="full",
        groups=(CaseGroup(tuple(SHAPES), _ALL_PAIRS, (FWD_BWD, FWD)),),
        timing=Timing(warmup=2, repeats=15, min_repeats=3, max_seconds=3.0),
    ),
    ("full", "cuda"): Preset(
        name="full",
        groups=(CaseGroup(tuple(SHAPES), _ALL_PAIRS, (FWD_BWD, FWD)),),
        timing=Timing(warmup=10, repeats=200, min_repeats=20, max_seconds=1.0),
    ),
}
_PRESETS[("smoke", "cuda")] = _PRESETS[("smoke", "cpu")]

PRESET_NAMES = ("smoke", "quick", "full")


def get_preset(name: str, device: torch.device) -> Preset:
    # Devices other than CUDA get the CPU presets (sizes that a few cores can manage).
    kind = "cuda" if device.type == "cuda" else "cpu"
    return _PRESETS[(name, kind)]


def build_cases(preset: Preset, losses: list[str]) -> list[Case]:
    """Cases in run order: group by group, shape by shape, loss by loss.

    Every provider runs one case before the next starts, so a run cut short by a time
    budget still has complete comparisons for what it did measure.
    """
    cases = []
    for group in preset.groups:
        for shape_name in group.shapes:
            for dtype, target_dtype in group.dtype_pairs:
                for mode in group.modes:
                    for loss in losses:
                        case = Case(loss, SHAPES[shape_name], dtype, target_dtype, mode)
                        if case not in cases:
                            cases.append(case)
    return cases


def make_inputs(case: Case, device: torch.device, seed: int = 0):
    """Random logits (never zeros: they can run faster than real data) and a binary mask."""
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(case.shape, generator=generator, device=device, dtype=torch.float32)
    logits = (2.0 * logits).to(DTYPES[case.dtype])
    mask = torch.rand(case.shape, generator=generator, device=device) < 0.3
    target = mask.to(DTYPES[case.target_dtype])
    del mask
    if case.mode == FWD_BWD:
        logits.requires_grad_(True)
    return logits, target


def make_step(loss_fn, case: Case, logits: torch.Tensor, target: torch.Tensor):
    """The callable that is timed: forward (+ backward) of one loss call.

    Backward uses autograd.grad so no .grad accumulation (an extra full-size read and
    write) is timed; the gradient is returned so that it is alive when memory is read.
    Forward only runs under no_grad, as validation would.
    """
    if case.mode == FWD_BWD:

        def step():
            loss = loss_fn(logits, target)
            (grad,) = torch.autograd.grad(loss, logits)
            return loss.detach(), grad

    else:

        def step():
            with torch.no_grad():
                return loss_fn(logits, target), None

    return step
