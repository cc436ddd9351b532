"""Who computes the loss: eager reference, torch.compile(reference), each fusedloss backend, and
the peers (smp and MONAI's own classes, ``_peers.py``) on the rows they compute."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import _peers
import torch
from _cases import (BINARY, CE_OPTIONS, GENERALIZED_DICE_LOSSES, LOVASZ_LOSSES, MULTICLASS, MULTICLASS_LOSSES,
                    PER_SAMPLE, PROBABILITIES, SQUARED_PRED, Case)

EAGER = "eager"
COMPILE = "compile"
FUSED = "fused"  # in a --providers list: every fusedloss backend that can run
PEER = "peer"  # another library's loss classes (_peers.PEERS)

# The Triton interpreter takes seconds per call at 4M elements, and a case makes several
# calls: past 1M elements a preset with it would take many minutes.
INTERPRETER_MAX_NUMEL = 1 << 20


# Multi-class only: takes no mode= and its reference has no multiclass_ prefix.
_MULTICLASS_ONLY = ("dice_ce",)

# A variant's options under the reference's own names (fusedloss.reference): (what every
# reference must take, what is passed only to those that take it). Probabilities:
# from_logits=False; the element terms (BCE, focal) of the binary references also
# clamped_log=True, the clamped logs of F.binary_cross_entropy that activation='none'
# means (the region-only and the multi-class references have no such argument).
# Ce_options and per_sample: the reference takes the public names (ce_class_weight,
# label_smoothing; per_sample). A variant without options (one_hot: only its target differs)
# passes nothing.
_REFERENCE_OPTIONS = {PROBABILITIES: ({"from_logits": False}, {"clamped_log": True}),
                      SQUARED_PRED: ({"squared_pred": True}, {})}
_SAME_NAMES = (CE_OPTIONS, PER_SAMPLE)


class RequestError(ValueError):
    """A provider asked for by name (--providers) cannot run here."""


class Unavailable(Exception):
    """This provider cannot run this case here; the case is left out with this note."""


def known_losses(fusedloss) -> list[str]:
    """Every loss name a run can ask for, in table order: the binary losses (keys of
    fusedloss.LOSSES, then generalized_dice, then lovasz_hinge), then the multi-class ones this
    fusedloss has (multiclass_generalized_dice, then lovasz_softmax, last)."""
    multiclass = getattr(fusedloss, "MULTICLASS_LOSSES", {})
    generalized = [name for name in GENERALIZED_DICE_LOSSES if hasattr(fusedloss, "generalized_dice_loss")]
    lovasz = [name for name in LOVASZ_LOSSES if hasattr(fusedloss, f"{name}_loss")]
    return ([*fusedloss.LOSSES, *(name for name in generalized if GENERALIZED_DICE_LOSSES[name] == BINARY),
             *(name for name in lovasz if LOVASZ_LOSSES[name] == BINARY)]
            + [name for name, key in MULTICLASS_LOSSES.items() if key in multiclass]
            + [name for name in generalized if GENERALIZED_DICE_LOSSES[name] == MULTICLASS]
            + [name for name in lovasz if LOVASZ_LOSSES[name] == MULTICLASS])


def loss_functions(fusedloss, loss: str):
    """(fused function, its extra keyword arguments, eager reference) of a loss name.

    Binary: fusedloss.LOSSES[loss] and reference.<its name>. Multi-class:
    fusedloss.MULTICLASS_LOSSES[key] with mode='multiclass' and
    reference.multiclass_<its name> (softmax + one-hot); dice_ce: reference.dice_ce_loss.
    Generalized Dice (in neither dict): fusedloss.generalized_dice_loss with
    mode='multilabel' (generalized_dice: the channels are the classes) or 'multiclass', and
    reference.generalized_dice_loss with multiclass=False / True. Lovász (in neither dict):
    fusedloss.lovasz_hinge_loss / lovasz_softmax_loss and the reference's of the same name.
    """
    if loss in LOVASZ_LOSSES:
        name = f"{loss}_loss"
        return getattr(fusedloss, name), {}, getattr(fusedloss.reference, name)
    if loss in GENERALIZED_DICE_LOSSES:
        multiclass = GENERALIZED_DICE_LOSSES[loss] == MULTICLASS
        return (fusedloss.generalized_dice_loss, {"mode": "multiclass" if multiclass else "multilabel"},
                functools.partial(fusedloss.reference.generalized_dice_loss, multiclass=multiclass))
    if loss not in MULTICLASS_LOSSES:
        functional = fusedloss.LOSSES[loss]
        return functional, {}, getattr(fusedloss.reference, functional.__name__)
    key = MULTICLASS_LOSSES[loss]
    functional = fusedloss.MULTICLASS_LOSSES[key]
    if key in _MULTICLASS_ONLY:
        return functional, {}, getattr(fusedloss.reference, functional.__name__)
    return functional, {"mode": "multiclass"}, getattr(fusedloss.reference, f"multiclass_{functional.__name__}")


def _parameters(function) -> set:
    return set(inspect.signature(function).parameters)


def variant_options(functional, reference, case: Case, device=None) -> tuple[dict, dict]:
    """(keyword arguments of the fusedloss function, those of the reference) that make a
    call the case's variant; ({}, {}) for the plain call and for a variant of the inputs
    only (one_hot). A (C,) tensor option is made on `device` (default: CPU), once per case
    (Case.call_options). Raises Unavailable where the loss has no such option (either
    function does not take it)."""
    public = case.call_options(torch.device("cpu") if device is None else device)
    if not public:
        return {}, {}
    required, optional = (public, {}) if case.variant in _SAME_NAMES else _REFERENCE_OPTIONS[case.variant]
    missing = sorted(set(public) - _parameters(functional)) + sorted(set(required) - _parameters(reference))
    if missing:
        raise Unavailable(f"{case.loss} takes no {', '.join(missing)} (variant {case.variant})")
    accepted = _parameters(reference)
    return public, {**required, **{name: value for name, value in optional.items() if name in accepted}}


def _lovasz_unavailable(fusedloss, backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run the Lovász losses here (their ops are a family of their own
    in fusedloss, which available_backends does not list: an extension built before them
    runs the other losses only), or None."""
    try:
        return fusedloss.ops.selection.unavailable_reason(backend, device, "lovasz")
    except Exception:  # an internal helper: a fusedloss without it is asked by the call itself
        return None


def _why_not(fusedloss, backend: str, device: torch.device, case: Case) -> str:
    """fusedloss's own reason, where it gives one."""
    try:
        reason = fusedloss.ops.selection.unavailable_reason(backend, device, case.family, case.classes or 0)
    except Exception:  # an internal helper: only for the wording of the note
        reason = None
    return f": {reason}" if reason else ""


def import_fusedloss(with_triton_interpreter: bool = False):
    """Import the package, from the working tree when it is not installed.

    TRITON_INTERPRET is read when the kernels are decorated, so it has to be set before
    the first import.
    """
    if with_triton_interpreter:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import fusedloss
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import fusedloss
    return fusedloss


def _raise_recompile_limit():
    # One compiled function sees several dtypes, ranks and grad modes; past dynamo's
    # recompile limit it would silently fall back to eager and be timed as "compile".
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 256))


@dataclass
class Provider:
    name: str
    kind: str  # EAGER, COMPILE or FUSED
    fusedloss: object = field(repr=False)
    device: torch.device = field(repr=False)
    families: frozenset = frozenset((BINARY, MULTICLASS))  # loss families a backend can run here
    _compiled: dict = field(default_factory=dict, repr=False)
    _compile_errors: dict = field(default_factory=dict, repr=False)

    def loss_fn(self, case: Case):
        """A callable (logits, target) -> loss for this case (its variant's options passed
        by the names each function takes), or raise Unavailable."""
        if self.kind == PEER:
            peer_fn = _peers.loss_fn(self.name, case)
            if peer_fn is None:
                raise Unavailable(f"{self.name} has no class for this row (see bench/_peers.py)")
            return peer_fn
        functional, options, reference = loss_functions(self.fusedloss, case.loss)
        public, internal = variant_options(functional, reference, case, self.device)
        if self.kind == COMPILE:
            return self._compiled_fn(case, reference, internal)
        if self.kind == EAGER:
            if not internal:
                return reference
            return lambda logits, target: reference(logits, target, **internal)
        if case.family not in self.families:
            why = _why_not(self.fusedloss, self.name, self.device, case)
            raise Unavailable(f"not a {case.family} backend on {self.device.type} here{why}")
        if self.device.type == "cpu" and self.name == "triton" and case.numel > INTERPRETER_MAX_NUMEL:
            raise Unavailable(f"Triton interpreter: over {INTERPRETER_MAX_NUMEL} elements")
        if case.lovasz:
            why = _lovasz_unavailable(self.fusedloss, self.name, self.device)
            if why:
                raise Unavailable(f"no Lovász kernels: {why}")
        backend = self.name
        options = {**options, **public}
        return lambda logits, target: functional(logits, target, backend=backend, **options)

    def _compiled_fn(self, case: Case, reference, options: dict):
        # Compiled once per (loss, dtype, variant) with dynamic shapes; the first call of each
        # case (where recompiles for a new rank or target dtype happen) is excluded from timing.
        # The variant's options are arguments of each call, not captured by the first case's
        # function: a (C,) tensor option differs from case to case.
        key = (case.loss, case.dtype, case.variant)
        if key in self._compile_errors:
            raise self._compile_errors[key]
        if key not in self._compiled:
            _raise_recompile_limit()
            self._compiled[key] = torch.compile(reference, dynamic=True)
        compiled = self._compiled[key]

        def call(logits, target):
            try:
                return compiled(logits, target, **options)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # a failed compile fails the same way every time
                self._compile_errors[key] = error
                raise

        return call


def resolve_providers(fusedloss, device: torch.device, requested: list[str] | None, use_interpreter: bool = False):
    """Providers to run on this device, in table order, and notes on those left out.

    A fused backend is a provider if fusedloss.available_backends lists it for either
    family ('binary': binary losses, 'multiclass': multi-class); it runs only the cases of
    the families it is listed for. On CPU the Triton backend runs in the interpreter; it
    is used only when asked for, even where TRITON_INTERPRET=1 makes fusedloss list it.
    A provider in ``requested`` that cannot run here raises RequestError: a silently
    dropped column would read as if it had been measured.
    """
    families = {}  # backend -> the loss families it can run, in fusedloss's order
    for family in (BINARY, MULTICLASS):
        for name in fusedloss.available_backends(device, family):
            families.setdefault(name, set()).add(family)
    families.pop("reference", None)  # the same code as the eager provider
    notes = []
    if device.type == "cpu" and not use_interpreter:
        families.pop("triton", None)
        notes.append("triton on CPU runs only with --with-triton-interpreter (slow); not run")
    backends = list(families)
    if not backends:
        notes.append(f"no fused backend can run on {device} here")
    for family in (BINARY, MULTICLASS):
        if backends and not any(family in can_run for can_run in families.values()):
            notes.append(f"no fused backend can run the {family} losses on {device} here")

    peers = []
    for peer in _peers.PEERS:
        reason = _peers.unavailable_reason(peer)
        if reason is None:
            peers.append(peer)
        elif requested is None:
            notes.append(f"peer {peer}: {reason}; not run")
    known = [EAGER, COMPILE] + backends + peers
    if requested is None:
        names = known
    else:
        names = []
        for name in requested:
            expanded = backends if name == FUSED else [name]
            for one in expanded:
                if one not in known:
                    why = fusedloss.backends().get(one, f"not a provider (known here: {', '.join(known)})")
                    if one in _peers.PEERS:
                        why = _peers.unavailable_reason(one)
                    if one == "triton" and device.type == "cpu" and not use_interpreter:
                        why = "on CPU only with --with-triton-interpreter"
                    raise RequestError(f"provider {one!r} cannot run on {device} here: {why}")
                elif one not in names:
                    names.append(one)
    providers = []
    for name in names:
        if name in (EAGER, COMPILE):
            providers.append(Provider(name, name, fusedloss, device))
        elif name in peers:
            providers.append(Provider(name, PEER, fusedloss, device))
        else:
            providers.append(Provider(name, FUSED, fusedloss, device, frozenset(families[name])))
    return providers, notes
