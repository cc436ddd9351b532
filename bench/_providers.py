"""Who computes the loss: eager reference, torch.compile(reference), and each fusedloss backend."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from _cases import Case

EAGER = "eager"
COMPILE = "compile"
FUSED = "fused"  # in a --providers list: every fusedloss backend that can run

# The Triton interpreter takes seconds per call at 4M elements, and a case makes several
# calls: past 1M elements a preset with it would take many minutes.
INTERPRETER_MAX_NUMEL = 1 << 20


class Unavailable(Exception):
    """This provider cannot run this case here; the case is left out with this note."""


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
    _compiled: dict = field(default_factory=dict, repr=False)
    _compile_errors: dict = field(default_factory=dict, repr=False)

    def loss_fn(self, case: Case):
        """A callable (logits, target) -> loss for this case, or raise Unavailable."""
        functional = self.fusedloss.LOSSES[case.loss]
        reference = getattr(self.fusedloss.reference, functional.__name__)
        if self.kind == EAGER:
            return reference
        if self.kind == COMPILE:
            return self._compiled_fn(case, reference)
        if self.device.type == "cpu" and self.name == "triton" and case.numel > INTERPRETER_MAX_NUMEL:
            raise Unavailable(f"Triton interpreter: over {INTERPRETER_MAX_NUMEL} elements")
        backend = self.name
        return lambda logits, target: functional(logits, target, backend=backend)

    def _compiled_fn(self, case: Case, reference):
        # Compiled once per (loss, dtype) with dynamic shapes; the first call of each case
        # (where recompiles for a new rank or target dtype happen) is excluded from timing.
        key = (case.loss, case.dtype)
        if key in self._compile_errors:
            raise self._compile_errors[key]
        if key not in self._compiled:
            _raise_recompile_limit()
            self._compiled[key] = torch.compile(reference, dynamic=True)
        compiled = self._compiled[key]

        def call(logits, target):
            try:
                return compiled(logits, target)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # a failed compile fails the same way every time
                self._compile_errors[key] = error
                raise

        return call


def resolve_providers(fusedloss, device: torch.device, requested: list[str] | None, use_interpreter: bool = False):
    """Providers to run on this device, in table order, and notes on those left out.

    On CPU the Triton backend runs in the interpreter; it is used only when asked for,
    even where TRITON_INTERPRET=1 makes fusedloss list it.
    """
    backends = list(fusedloss.available_backends(device))
    notes = []
    if "reference" in backends:
        backends.remove("reference")  # the same code as the eager provider
    if device.type == "cpu" and not use_interpreter:
        if "triton" in backends:
            backends.remove("triton")
        notes.append("triton on CPU runs only with --with-triton-interpreter (slow); not run")
    if not backends:
        notes.append(f"no fused backend can run on {device} here")

    known = [EAGER, COMPILE] + backends
    if requested is None:
        names = known
    else:
        names = []
        for name in requested:
            expanded = backends if name == FUSED else [name]
            for one in expanded:
                if one not in known:
                    notes.append(f"provider {one!r} cannot run on {device} here; left out")
                elif one not in names:
                    names.append(one)
    providers = []
    for name in names:
        kind = name if name in (EAGER, COMPILE) else FUSED
        providers.append(Provider(name, kind, fusedloss, device))
    return providers, notes

