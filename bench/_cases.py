"""What is measured: benchmark cases, the presets that list them, their inputs and their byte floor."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

FWD_BWD = "fwd+bwd"
FWD = "fwd"

# Loss families. Binary (sigmoid) losses take a target of the logits' shape (a 0/1 mask);
# multi-class (softmax) losses take (N, C, *spatial) logits and an (N, *spatial) class map.
BINARY = "binary"
MULTICLASS = "multiclass"

# Multi-class losses by their benchmark name -> key of fusedloss.MULTICLASS_LOSSES. The
# prefix keeps them apart from the binary losses of the same kind in tables and JSON
# (binary names are the keys of fusedloss.LOSSES). dice_ce exists only as multi-class.
MULTICLASS_LOSSES = {"multiclass_dice": "dice", "multiclass_iou": "iou", "multiclass_tversky": "tversky",
                     "multiclass_focal_tversky": "focal_tversky", "multiclass_focal": "focal", "dice_ce": "dice_ce",
                     "multiclass_dice_focal": "dice_focal"}


# Generalized Dice (Sudre et al.): fusedloss.generalized_dice_loss, which is in neither
# fusedloss.LOSSES nor MULTICLASS_LOSSES. Benchmark name -> its family: binary runs it with
# mode='multilabel' (the classes are the channels), multi-class with a class map.
GENERALIZED_DICE_LOSSES = {"generalized_dice": BINARY, "multiclass_generalized_dice": MULTICLASS}
# Losses that need C > 1 channels: a Generalized Dice of one channel is a Dice loss (its one
# weight cancels), so it is left out of the binary shapes with C = 1.
_NEEDS_CHANNELS = ("generalized_dice",)


# The Lovász losses (Berman et al.): fusedloss.lovasz_hinge_loss (binary: a 0/1 mask of the
# logits' shape) and fusedloss.lovasz_softmax_loss (a class map), in neither dict either.
# Benchmark name -> its family. They sort every error, so their floor is their own (see
# Case.floor_bytes), and they run only in the groups that name them (group_losses): not in a
# group of every loss of their family, nor there when asked for by name.
LOVASZ_LOSSES = {"lovasz_hinge": BINARY, "lovasz_softmax": MULTICLASS}


def loss_family(loss: str) -> str:
    if loss in GENERALIZED_DICE_LOSSES:
        return GENERALIZED_DICE_LOSSES[loss]
    if loss in LOVASZ_LOSSES:
        return LOVASZ_LOSSES[loss]
    return MULTICLASS if loss in MULTICLASS_LOSSES else BINARY


def loss_applies(loss: str, shape: tuple[int, ...]) -> bool:
    """Whether a group runs this loss at this shape (the Generalized Dice of several channels only)."""
    return loss not in _NEEDS_CHANNELS or shape[1] > 1


# Memory layouts of the logits: every fused kernel reads contiguous and channels_last
# (2-D and 3-D) tensors in place; other layouts are copied, which the CUDA memory figure
# (the allocator's peak during the call) then counts.
CONTIGUOUS = "contiguous"
CHANNELS_LAST = "channels_last"  # channels_last_3d for 5-D logits
LAYOUTS = (CONTIGUOUS, CHANNELS_LAST)

# Variants: a named set of options of the loss call, by their public names (keyword
# arguments of the fusedloss function; the eager and compile providers pass the
# reference's own names, see _providers), and/or another form of the inputs. "" is the
# plain call, every option at its default: the rows, labels and keys of plain cases carry
# no variant. Only one_hot changes the floor (its target is C times larger); the options
# alone read and write the same tensors.
PLAIN = ""
PROBABILITIES = "probabilities"  # the input holds probabilities: sigmoid / softmax(dim=1) of the logits
SQUARED_PRED = "squared_pred"  # V-Net's denominator: sums of p**2 and t**2
ONE_HOT = "one_hot"  # multi-class: a dense (N, C, *spatial) target, the one-hot of the plain case's class map
CE_OPTIONS = "ce_options"  # dice_ce: class weights of the cross-entropy term and label smoothing
PER_SAMPLE = "per_sample"  # Lovász: one loss per sample (smp's per_image), averaged; plain: one for the batch


class PerClass:
    """An option that is a (C,) tensor, made on the case's device (see Case.call_options):
    torch.linspace(start, end, C) in fp32."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end

    def __eq__(self, other):
        return isinstance(other, PerClass) and (self.start, self.end) == (other.start, other.end)

    def __hash__(self):
        return hash((self.start, self.end))

    def __repr__(self):
        return f"linspace({self.start}, {self.end}, C)"


VARIANTS = {PLAIN: {}, PROBABILITIES: {"activation": "none"}, SQUARED_PRED: {"squared_pred": True}, ONE_HOT: {},
            CE_OPTIONS: {"ce_class_weight": PerClass(0.5, 2.0), "label_smoothing": 0.1},
            PER_SAMPLE: {"per_sample": True}}
# Losses a variant does not apply to (their function has no such option): a group that
# asks for both leaves that pair out.
_VARIANT_NOT_FOR = {SQUARED_PRED: ("focal", "multiclass_focal", *GENERALIZED_DICE_LOSSES, *LOVASZ_LOSSES),
                    PROBABILITIES: ("lovasz_hinge",)}
# Variants of some losses only: ce_options are dice_ce's; per_sample the Lovász losses'; a
# one-hot target is multi-class.
_VARIANT_ONLY_FOR = {CE_OPTIONS: ("dice_ce",), PER_SAMPLE: tuple(LOVASZ_LOSSES)}
_VARIANT_FAMILY = {ONE_HOT: MULTICLASS}
# Target dtypes a dense (one-hot) target can have: fusedloss's dense multi-class targets.
DENSE_TARGET_DTYPES = ("float32", "float16", "bfloat16", "float64", "bool", "uint8")


def variant_applies(loss: str, variant: str) -> bool:
    if loss in _VARIANT_NOT_FOR.get(variant, ()):
        return False
    if variant in _VARIANT_ONLY_FOR and loss not in _VARIANT_ONLY_FOR[variant]:
        return False
    return variant not in _VARIANT_FAMILY or loss_family(loss) == _VARIANT_FAMILY[variant]


@functools.lru_cache(maxsize=8)
def _per_class_tensor(option: PerClass, classes: int, device: torch.device) -> torch.Tensor:
    # One tensor per (option, C, device), shared by every provider of the cases that use it.
    return torch.linspace(option.start, option.end, classes, dtype=torch.float32, device=device)


# Shapes by a short name, (N, C, *spatial); numel of the logits in the comment. The binary
# cases' realistic shapes are a 2-D batch (16x1x512x512) and a 3-D volume of 4 independent
# masks (2x4x128x128x128). Multi-class shapes (C = dim 1, the class count; the target is
# the shape without it): street scenes with 19 classes, an ADE20K-like 150 classes, 3-D
# organs with 14 classes, smaller variants of the first two, and a tiny one for smoke.
SHAPES = {
    "64K": (1, 1, 256, 256),  # 65,536
    "256K": (4, 1, 256, 256),  # 262,144
    "1M": (4, 1, 512, 512),  # 1,048,576
    "seg2d": (16, 1, 512, 512),  # 4,194,304
    "seg3d": (2, 4, 128, 128, 128),  # 16,777,216
    "67M": (16, 4, 1024, 1024),  # 67,108,864
    "268M": (16, 4, 2048, 2048),  # 268,435,456
    "mc8_64K": (2, 8, 64, 64),  # 65,536; target 8,192
    "mc19s": (2, 19, 128, 128),  # 622,592; target 32,768
    "mc150s": (1, 150, 64, 64),  # 614,400; target 4,096
    "mc19": (4, 19, 256, 256),  # 4,980,736; target 262,144
    "mc150": (2, 150, 128, 128),  # 4,915,200; target 32,768
    "mc14_3d": (1, 14, 64, 96, 96),  # 8,257,536; target 589,824
}
_BINARY_SHAPES = ("64K", "256K", "1M", "seg2d", "seg3d", "67M", "268M")
_MULTICLASS_SHAPES = ("mc19s", "mc150s", "mc19", "mc150", "mc14_3d")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64,
          "uint8": torch.uint8, "bool": torch.bool, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64}


@dataclass(frozen=True)
class Case:
    loss: str  # key of fusedloss.LOSSES, or of MULTICLASS_LOSSES above
    shape: tuple[int, ...]  # logits (N, C, *spatial)
    dtype: str  # logits dtype, a key of DTYPES
    target_dtype: str
    mode: str  # FWD_BWD or FWD
    layout: str = CONTIGUOUS  # of the logits (and of a binary target): a key of LAYOUTS
    variant: str = PLAIN  # options of the call: a key of VARIANTS

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {sorted(LAYOUTS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}")
        if not variant_applies(self.loss, self.variant):
            raise ValueError(f"{self.loss} has no variant {self.variant!r}")
        if self.dense_target:
            if self.target_dtype not in DENSE_TARGET_DTYPES:
                raise ValueError(f"{self.loss}: a one-hot target is {', '.join(DENSE_TARGET_DTYPES)}, "
                                 f"not {self.target_dtype}")
        elif self.multiclass:
            target_dtype = DTYPES[self.target_dtype]
            if target_dtype.is_floating_point or target_dtype == torch.bool:
                raise ValueError(f"{self.loss}: a class map needs an integer target dtype, got {self.target_dtype}")
            if self.classes - 1 > torch.iinfo(target_dtype).max:
                raise ValueError(f"{self.loss}: {self.classes} classes do not fit in {self.target_dtype}")

    @property
    def family(self) -> str:
        return loss_family(self.loss)

    @property
    def multiclass(self) -> bool:
        return self.family == MULTICLASS

    @property
    def classes(self) -> int | None:
        """C of a multi-class case (dim 1 of the logits); None for binary losses."""
        return self.shape[1] if self.multiclass else None

    @property
    def dense_target(self) -> bool:
        """A multi-class target of the logits' shape (the one_hot variant), not a class map."""
        return self.multiclass and self.variant == ONE_HOT

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Binary and a dense (one_hot) multi-class target: the logits' shape. Multi-class:
        (N, *spatial), the class map."""
        if self.multiclass and not self.dense_target:
            return self.shape[:1] + self.shape[2:]
        return self.shape

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def target_numel(self) -> int:
        return math.prod(self.target_shape)

    @property
    def shape_str(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def target_shape_str(self) -> str:
        return "x".join(map(str, self.target_shape))

    @property
    def input_itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def target_itemsize(self) -> int:
        return DTYPES[self.target_dtype].itemsize

    @property
    def options(self) -> dict:
        """The variant's keyword arguments of the public loss function ({} for the plain call);
        a (C,) tensor option as its PerClass description (call_options makes the tensor)."""
        return dict(VARIANTS[self.variant])

    def call_options(self, device: torch.device) -> dict:
        """The variant's keyword arguments as passed: each PerClass a (C,) fp32 tensor on
        `device`, made once per (C, device) and shared by the providers (never in the timed call)."""
        return {name: _per_class_tensor(value, self.shape[1], torch.device(device)) if isinstance(value, PerClass)
                else value for name, value in self.options.items()}

    @property
    def lovasz(self) -> bool:
        return self.loss in LOVASZ_LOSSES

    @property
    def floor_bytes(self) -> int:
        """Fewest bytes the op must move through memory (the options do not change it; a
        one-hot target does, through target_numel).

        Forward reads input and target once; backward reads them again and writes the
        gradient (same dtype as the input): 3*s_x*numel + 2*s_t*target_numel. Forward
        only: s_x*numel + s_t*target_numel. Binary targets have numel elements (3*s_x +
        2*s_t per element); a multi-class class map has numel / C, a dense (one-hot)
        multi-class target numel (C*s_t bytes per pixel). The Lovász losses sort their
        errors: see _lovasz_floor_bytes.
        """
        if self.lovasz:
            return self._lovasz_floor_bytes()
        if self.mode == FWD_BWD:
            return 3 * self.input_itemsize * self.numel + 2 * self.target_itemsize * self.target_numel
        return self.input_itemsize * self.numel + self.target_itemsize * self.target_numel

    def _lovasz_floor_bytes(self) -> int:
        """The Lovász losses' floor: the fused path's passes, each reading and writing each of
        its tensors once, the sort counted at the least any sort moves (bench/README.md, "The
        Lovász losses' floor"). Per error (one per logit: numel of them, the hinge's (G, L)
        rows, the softmax's (G, C, L)), s_e = 4 bytes (fp32 errors and truth; 8 for fp64
        logits), int64 indices from torch.sort, int32 kept (every row here is under 2**31):

        forward: the errors pass reads x and t and writes errors and truth (2 s_e); the sort
        reads the keys and writes sorted keys and int64 indices (2 s_e + 8); the indices go
        to int32 (8 + 4); the scan reads sorted errors, order and the truth it gathers
        (2 s_e + 4): s_x*numel + s_t*target_numel + (6 s_e + 24)*numel (48 B per error).
        backward: the errors pass again (x, t; 2 s_e: it writes the errors it does not use),
        the backward scan reads order, gathers truth, scatters grad_errors (2 s_e + 4), the
        chain pass reads grad_errors, x, t and writes grad x (s_e): 3*s_x*numel +
        2*s_t*target_numel + (5 s_e + 4)*numel (24 B per error).
        """
        s_e = 8 if self.dtype == "float64" else 4
        inputs = self.input_itemsize * self.numel + self.target_itemsize * self.target_numel
        errors_pass = 2 * s_e  # writes errors and truth
        sort = s_e + (s_e + 8)  # reads the keys once; writes sorted keys and int64 indices once
        to_int32 = 8 + 4
        scan = s_e + 4 + s_e  # sorted errors, int32 order, the truth gathered
        forward = inputs + (errors_pass + sort + to_int32 + scan) * self.numel
        if self.mode != FWD_BWD:
            return forward
        scan_backward = 4 + s_e + s_e  # order, the truth gathered, grad_errors scattered
        chain = s_e  # grad_errors; plus x and t read and grad x written
        backward = (2 * inputs + self.input_itemsize * self.numel
                    + (errors_pass + scan_backward + chain) * self.numel)
        return forward + backward

    @property
    def label(self) -> str:
        layout = "" if self.layout == CONTIGUOUS else f" {self.layout}"
        variant = f" {self.variant}" if self.variant else ""
        return f"{self.loss} {self.shape_str}{layout}{variant} {self.dtype}/{self.target_dtype} {self.mode}"

    def rough_peak_bytes(self) -> int:
        """Generous estimate of the memory one run needs (inputs, gradient, eager temporaries).

        Used only to skip cases that cannot fit; eager reference temporaries are counted as
        a handful of fp32 full-size tensors (multi-class: plus the int64 one-hot target and
        an int64 copy of the class map).
        """
        per_element = 2 * self.input_itemsize + 12 * 4
        if self.lovasz:  # the reference's fp64 truth, Jaccard and cumulative sums, int64 sort indices
            per_element += 8 * 8
        if self.dense_target:  # the target, the one-hot's int64 making, and eager's fp32 copy of it
            return self.numel * (per_element + self.target_itemsize + 8 + 4)
        if self.multiclass:
            return self.numel * (per_element + 8) + self.target_numel * (self.target_itemsize + 2 * 8)
        return self.numel * (per_element + self.target_itemsize)


@dataclass(frozen=True)
class CaseGroup:
    """A block of a preset: every shape x every (dtype, target dtype) x every mode, for
    the losses of one family, each in every variant of `variants` that applies to it.
    `losses` is the group's default (None: every loss of the family); losses asked for by
    name replace it (those of the family)."""

    shapes: tuple[str, ...]
    dtype_pairs: tuple[tuple[str, str], ...]
    modes: tuple[str, ...]
    family: str = BINARY
    losses: tuple[str, ...] | None = None
    layout: str = CONTIGUOUS
    variants: tuple[str, ...] = (PLAIN,)


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
    providers: tuple[str, ...] | None = None  # None: every provider that can run


_ALL_PAIRS = tuple((d, t) for d in ("float32", "bfloat16", "float16") for t in ("float32", "uint8"))
# Class maps: uint8 (C <= 255, the compact one) and int64 (what most data pipelines give).
_ALL_MULTICLASS_PAIRS = tuple((d, t) for d in ("float32", "bfloat16", "float16") for t in ("uint8", "int64"))
# Quick runs these three multi-class losses; multiclass_iou, multiclass_tversky and multiclass_focal_tversky run
# the same fused pass as multiclass_dice with other coefficients (full runs them all).
_QUICK_MULTICLASS = ("multiclass_dice", "multiclass_focal", "dice_ce")
# Quick's binary groups run the binary losses it had before dice_focal came (full runs every
# one): dice_focal, whose pass is dice_bce's with a focal term, runs in its variant group
# below, so that a run cut short by a time budget loses no older row to it.
_QUICK_BINARY = ("dice", "iou", "tversky", "focal_tversky", "focal", "dice_bce")

# Presets per device type. "quick" is what `make bench` runs. Its groups run in order of
# interest, so a run cut short by a time budget keeps the most useful rows: the realistic
# binary shapes, the realistic multi-class shapes, then the dtype matrices, the rest of
# the size sweep, then forward only, then the variants, then dense targets, Dice+CE's options
# and Generalized Dice. Kept small because every new (loss, dtype, rank,
# target dtype, mode) costs the compile provider a recompile.
# Every shape x dtype pair x mode, the same on every device (cases that do not fit are left out).
# channels_last logits, read in place by every fused backend (quick and full run them).
_LAYOUT_GROUPS = (
    CaseGroup(("seg3d",), (("float32", "uint8"),), (FWD_BWD,), losses=("dice",), layout=CHANNELS_LAST),
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_dice",), CHANNELS_LAST),
)
# The loss options (variants) and Dice+Focal, at the realistic 2-D shapes, fp32 logits and a
# uint8 target, fwd+bwd: the last groups of quick (a time budget cuts them first) and full.
_VARIANT_GROUPS = (
    CaseGroup(("seg2d",), (("float32", "uint8"),), (FWD_BWD,), losses=("dice", "dice_bce"),
              variants=(PROBABILITIES, SQUARED_PRED)),
    CaseGroup(("seg2d",), (("float32", "uint8"),), (FWD_BWD,), losses=("dice_focal",)),
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_dice", "dice_ce"),
              variants=(PROBABILITIES,)),
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_dice_focal",)),
)
# Dense targets, Dice+CE's cross-entropy options and Generalized Dice, fwd+bwd with fp32
# logits and uint8 targets: multiclass_dice and dice_ce with a one-hot (N, C, *spatial) uint8
# target at mc19 (C = 19: 19 target bytes per pixel, not 1), dice_ce with class weights and
# label smoothing, the multi-class Generalized Dice (class map) at mc19 and the binary one
# (mode='multilabel', the 4 channels of seg3d). The very last group of quick (a time budget
# cuts it first, before any older row) and of full.
_TARGET_OPTION_GROUPS = (
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_dice", "dice_ce"),
              variants=(ONE_HOT,)),
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("dice_ce",), variants=(CE_OPTIONS,)),
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_generalized_dice",)),
    CaseGroup(("seg3d",), (("float32", "uint8"),), (FWD_BWD,), losses=("generalized_dice",)),
)
# The Lovász losses against smp's LovaszLoss (which computes in fp32 only: fp32 logits): the
# hinge at seg2d for the whole batch (one sort of 4.2M errors) and per sample (smp's
# per_image: 16 sorts of 262K), the softmax at mc19 for the whole batch (19 sorts of 262K
# pixels), fwd+bwd with uint8 targets. After every other group of quick (a time budget cuts
# them first, before any older row); full adds bf16 logits (smp then gets them cast to fp32
# in its call), an int64 class map and forward only.
_LOVASZ_GROUPS = (
    CaseGroup(("seg2d",), (("float32", "uint8"),), (FWD_BWD,), losses=("lovasz_hinge",), variants=(PLAIN, PER_SAMPLE)),
    CaseGroup(("mc19",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("lovasz_softmax",)),
)
_FULL_LOVASZ_GROUPS = (
    CaseGroup(("seg2d",), (("float32", "uint8"), ("bfloat16", "uint8")), (FWD_BWD, FWD), losses=("lovasz_hinge",),
              variants=(PLAIN, PER_SAMPLE)),
    CaseGroup(("mc19",), (("float32", "uint8"), ("float32", "int64"), ("bfloat16", "uint8")), (FWD_BWD, FWD),
              MULTICLASS, ("lovasz_softmax",)),
)
_FULL_GROUPS = (CaseGroup(_BINARY_SHAPES, _ALL_PAIRS, (FWD_BWD, FWD)),
                CaseGroup(_MULTICLASS_SHAPES, _ALL_MULTICLASS_PAIRS, (FWD_BWD, FWD), MULTICLASS), *_LAYOUT_GROUPS,
                *_VARIANT_GROUPS, *_TARGET_OPTION_GROUPS, *_FULL_LOVASZ_GROUPS)

_PRESETS = {
    ("smoke", "cpu"): Preset(
        name="smoke",
        groups=(
            CaseGroup(("64K",), (("float32", "float32"),), (FWD_BWD,), losses=("dice", "focal")),
            CaseGroup(
                ("mc8_64K",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_dice", "multiclass_focal")
            ),
            CaseGroup(
                ("mc8_64K",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, ("multiclass_dice",), CHANNELS_LAST
            ),
        ),
        timing=Timing(warmup=1, repeats=3, min_repeats=2, max_seconds=1.0),
        providers=("eager", "fused"),
    ),
    ("quick", "cpu"): Preset(
        name="quick",
        groups=(CaseGroup(("seg2d", "seg3d"), (("float32", "float32"),), (FWD_BWD,), losses=_QUICK_BINARY),
                CaseGroup(("mc19", "mc150"), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, _QUICK_MULTICLASS),
                CaseGroup(("seg2d",), (("bfloat16", "uint8"),), (FWD_BWD,), losses=_QUICK_BINARY),
                CaseGroup(("mc14_3d",), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, _QUICK_MULTICLASS),
                *_LAYOUT_GROUPS, CaseGroup(("64K",), (("float32", "float32"),), (FWD_BWD,), losses=_QUICK_BINARY),
                CaseGroup(("seg2d",), (("float32", "float32"),), (FWD,), losses=_QUICK_BINARY), *_VARIANT_GROUPS,
                *_TARGET_OPTION_GROUPS, *_LOVASZ_GROUPS),
        timing=Timing(warmup=1, repeats=7, min_repeats=3, max_seconds=1.5),
    ),
    ("quick", "cuda"): Preset(
        name="quick",
        groups=(
            CaseGroup(("seg2d", "seg3d"), (("float32", "float32"),), (FWD_BWD,), losses=_QUICK_BINARY),
            CaseGroup(("mc19", "mc150", "mc14_3d"), (("float32", "uint8"),), (FWD_BWD,), MULTICLASS, _QUICK_MULTICLASS),
            CaseGroup(("seg2d",), (("bfloat16", "uint8"), ("float16", "uint8"), ("float32", "uint8")), (FWD_BWD,),
                      losses=_QUICK_BINARY),
            CaseGroup(("mc19", "mc150"), (("bfloat16", "uint8"), ("float32", "int64")), (FWD_BWD,), MULTICLASS,
                      _QUICK_MULTICLASS),
            *_LAYOUT_GROUPS,
            CaseGroup(("64K", "67M"), (("float32", "float32"),), (FWD_BWD,), losses=_QUICK_BINARY),
            CaseGroup(("seg2d",), (("float32", "float32"),), (FWD,), losses=_QUICK_BINARY),
            CaseGroup(("mc19",), (("float32", "uint8"),), (FWD,), MULTICLASS, _QUICK_MULTICLASS),
            *_VARIANT_GROUPS,
            *_TARGET_OPTION_GROUPS,
            *_LOVASZ_GROUPS,
        ),
        timing=Timing(warmup=5, repeats=50, min_repeats=10, max_seconds=0.25),
    ),
    ("full", "cpu"): Preset(name="full", groups=_FULL_GROUPS,
                            timing=Timing(warmup=2, repeats=15, min_repeats=3, max_seconds=3.0)),
    ("full", "cuda"): Preset(name="full", groups=_FULL_GROUPS,
                             timing=Timing(warmup=10, repeats=200, min_repeats=20, max_seconds=1.0)),
}
_PRESETS[("smoke", "cuda")] = _PRESETS[("smoke", "cpu")]

PRESET_NAMES = ("smoke", "quick", "full")


def get_preset(name: str, device: torch.device) -> Preset:
    # Devices other than CUDA get the CPU presets (sizes that a few cores can manage).
    kind = "cuda" if device.type == "cuda" else "cpu"
    return _PRESETS[(name, kind)]


def group_losses(group: CaseGroup, requested: list[str] | None, known: list[str]) -> list[str]:
    """The losses a group runs: those asked for that belong to its family, or (nothing
    asked for) its default, every known loss of its family when it has none. A Lovász loss
    runs only in a group whose default names it, asked for or not."""
    if requested is not None:
        losses = [loss for loss in requested if loss_family(loss) == group.family]
    elif group.losses is not None:
        return list(group.losses)
    else:
        losses = [loss for loss in known if loss_family(loss) == group.family]
    return [loss for loss in losses if loss not in LOVASZ_LOSSES or loss in (group.losses or ())]


def build_cases(preset: Preset, requested: list[str] | None, known: list[str]) -> list[Case]:
    """Cases in run order: group by group, shape by shape, loss by loss, variant by variant
    (those of a group that apply to the loss).

    `requested`: loss names asked for (None: each group's default); `known`: every loss
    name this fusedloss has, in table order. Every provider runs one case before the next
    starts, so a run cut short by a time budget still has complete comparisons for what it
    did measure.
    """
    cases = []
    for group in preset.groups:
        losses = group_losses(group, requested, known)
        for shape_name in group.shapes:
            for dtype, target_dtype in group.dtype_pairs:
                for mode in group.modes:
                    for loss in losses:
                        if not loss_applies(loss, SHAPES[shape_name]):
                            continue
                        for variant in group.variants:
                            if not variant_applies(loss, variant):
                                continue
                            case = Case(loss, SHAPES[shape_name], dtype, target_dtype, mode, group.layout, variant)
                            if case not in cases:
                                cases.append(case)
    return cases


def make_inputs(case: Case, device: torch.device, seed: int = 0):
    """Random logits (never zeros: they can run faster than real data) and a target:
    a binary mask (about 30% ones), or for a multi-class case a class map with every class
    equally likely. The "probabilities" variant gets, in place of the logits, their
    sigmoid (multi-class: softmax over dim 1), computed in fp32 then cast to the case's
    dtype; its target is the plain case's. The "one_hot" variant gets, in place of the
    class map, its one-hot (N, C, *spatial) in the case's target dtype (contiguous, or the
    logits' channels_last layout)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = 2.0 * torch.randn(case.shape, generator=generator, device=device, dtype=torch.float32)
    if case.variant == PROBABILITIES:
        logits = torch.softmax(logits, dim=1) if case.multiclass else torch.sigmoid(logits)
    logits = logits.to(DTYPES[case.dtype])
    if case.dense_target:  # the one-hot of the plain case's class map (the same values whatever its dtype)
        labels = torch.randint(0, case.classes, case.shape[:1] + case.shape[2:], generator=generator, device=device)
        target = torch.nn.functional.one_hot(labels, case.classes).movedim(-1, 1).to(DTYPES[case.target_dtype])
        target = target.contiguous()
        del labels
    elif case.multiclass:
        target = torch.randint(
            0, case.classes, case.target_shape, generator=generator, device=device, dtype=DTYPES[case.target_dtype]
        )
    else:
        mask = torch.rand(case.shape, generator=generator, device=device) < 0.3
        target = mask.to(DTYPES[case.target_dtype])
        del mask
    if case.layout == CHANNELS_LAST:
        memory_format = torch.channels_last if logits.dim() == 4 else torch.channels_last_3d
        logits = logits.to(memory_format=memory_format)
        if not case.multiclass or case.dense_target:  # a class map has no channel dim: it stays as it is
            target = target.to(memory_format=memory_format)
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
