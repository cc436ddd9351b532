"""The two loss families as case objects, so every concern file checks both.

Like torchvision's RoIOpTester (one tester, ``fn`` / ``expected_fn`` per RoI op),
a ``Family`` says what a test needs to know about mode='binary' (binary and
multi-label: sigmoid, a target of the input's shape) or mode='multiclass'
(softmax, a class map): its losses and their non-default parameters, how to make
an input / target pair, the fused backends that run it here, and the reference.
A ``LossCase`` is one loss of one family. A test is parametrized over cases (and
what else varies per family) with ``parametrize``; a test that only makes sense
for one family lists only that family's cases, and says why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from helpers import (ALL_LOSSES, CLASS_MAP_DTYPES, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, IGNORE, LOSS_PARAMS,
                     MULTICLASS_PARAMS, MULTICLASS_REGION_LOSSES, REGION_LOSSES, SWEPT_ELSEWHERE, TARGET_DTYPES,
                     make_class_pair, make_pair)

import fusedloss


@dataclass(frozen=True, eq=False)
class Family:
    name: str  # the family's `mode` ('binary' also stands for 'multilabel')
    losses: dict  # name -> the public loss function
    params: dict  # name -> non-default parameters, so the formulas' constants are exercised
    region_losses: tuple  # the losses with groups (per_sample, weight, ...): all but focal
    backends: tuple  # the fused backends that run this family here
    target_dtypes: tuple
    make_pair: Callable  # (shape (N, C, *spatial), dtype, target_dtype, **kw) -> (input, target) on DEVICE
    ignore_index: int | None  # a value that marks pixels that count nowhere (None: the family has none)

    def __repr__(self):
        return self.name

    def case(self, name) -> LossCase:
        return LossCase(self, name)

    def cases(self, names=None) -> list:
        """The cases of ``names``; by default every loss a concern sweeps (not SWEPT_ELSEWHERE)."""
        return [LossCase(self, name) for name in (names or [n for n in self.losses if n not in SWEPT_ELSEWHERE])]

    def options(self, name, *, params=True, ignore=False, **options) -> dict:
        """A call's keyword arguments: the loss's parameters (``params``), mode='multiclass'
        where the loss takes a mode, ``ignore_index`` where the family has one (``ignore``)."""
        merged = dict(self.params[name]) if params else {}
        if self.name == "multiclass" and name != "dice_ce":
            merged["mode"] = "multiclass"
        if ignore and self.ignore_index is not None:
            merged["ignore_index"] = self.ignore_index
        return {**merged, **options}


@dataclass(frozen=True, eq=False)
class LossCase:
    family: Family
    name: str

    def __repr__(self):
        return f"{self.family.name}-{self.name}"

    @property
    def fn(self):
        return self.family.losses[self.name]

    @property
    def expected_fn(self):
        """The reference: the same call with backend='reference' (fusedloss/reference.py)."""
        return functools.partial(self.fn, backend="reference")

    @property
    def backends(self):
        return self.family.backends

    @property
    def region(self) -> bool:
        return self.name in self.family.region_losses

    def make_pair(self, *args, **kwargs):
        return self.family.make_pair(*args, **kwargs)

    def options(self, **options) -> dict:
        return self.family.options(self.name, **options)

    def __call__(self, x, t, backend, **options):
        """The loss with its case's parameters and mode, and ``options``."""
        return self.fn(x, t, backend=backend, **self.options(**options))


def _make_binary(shape, dtype=torch.float32, target_dtype=torch.float32, **kwargs):
    return make_pair(shape, dtype, target_dtype, **kwargs)


def _make_multiclass(shape, dtype=torch.float32, target_dtype=torch.int64, **kwargs):
    return make_class_pair(shape, dtype, target_dtype, **kwargs)


BINARY = Family("binary", dict(fusedloss.LOSSES), LOSS_PARAMS, tuple(REGION_LOSSES), tuple(FUSED_BACKENDS),
                tuple(TARGET_DTYPES), _make_binary, None)
MULTICLASS = Family("multiclass", dict(fusedloss.MULTICLASS_LOSSES), MULTICLASS_PARAMS,
                    tuple(MULTICLASS_REGION_LOSSES) + ("dice_ce",), tuple(FUSED_MULTICLASS_BACKENDS),
                    tuple(CLASS_MAP_DTYPES), _make_multiclass, IGNORE)
FAMILIES = (BINARY, MULTICLASS)
assert set(BINARY.losses) == set(ALL_LOSSES + SWEPT_ELSEWHERE) and set(MULTICLASS.losses) == set(MULTICLASS_PARAMS), (
    "a new loss needs its parameters in helpers.LOSS_PARAMS / MULTICLASS_PARAMS"
)

ALL_CASES = BINARY.cases() + MULTICLASS.cases()


def with_backends(cases, reference=False, per_family=None):
    """(case, backend) for each fused backend that runs the case's family (and 'reference');
    with ``per_family`` (family -> values), (case, backend, value) for each of its family's values."""
    pairs = [(case, backend) for case in cases for backend in case.backends + (("reference",) if reference else ())]
    if per_family is None:
        return pairs
    return [(case, backend, value) for case, backend in pairs for value in per_family[case.family]]


def _id(value):
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, dict):
        return "-".join(f"{k}={_id(v)}" for k, v in value.items()) or "defaults"
    if isinstance(value, (tuple, list)):
        return "x".join(_id(v) for v in value) if all(isinstance(v, int) for v in value) else str(value)
    if callable(value) and hasattr(value, "__name__") and not isinstance(value, (Family, LossCase)):
        return value.__name__
    return str(value)


def parametrize(argnames, rows):
    """pytest.mark.parametrize with readable ids (cases by family-name, dtypes, dicts)."""
    names = [name.strip() for name in argnames.split(",")]
    rows = [row if isinstance(row, tuple) else (row,) for row in rows]
    assert rows and all(len(row) == len(names) for row in rows), argnames
    return pytest.mark.parametrize(argnames, [pytest.param(*row, id="-".join(_id(v) for v in row)) for row in rows])
