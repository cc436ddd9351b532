"""What a run will do: the device, preset, cases and providers that its options select.

Shared by bench/main.py and the pytest-benchmark suite so both run the same cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from _cases import Case, Preset, build_cases, get_preset
from _providers import Provider, RequestError, import_fusedloss, known_losses, resolve_providers


class PlanError(ValueError):
    """Options that cannot be run here (unknown loss, no CUDA, ...)."""


@dataclass
class Plan:
    device: torch.device
    preset: Preset
    cases: list[Case]
    providers: list[Provider]
    fusedloss: object = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def provider(self, name: str) -> Provider:
        return next(provider for provider in self.providers if provider.name == name)


def split_list(text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b']; None or '' -> None (the default)."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()] or None


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PlanError(f"device {name}: CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def make_plan(preset_name: str, device_name: str | None = None, losses: str | None = None, providers: str | None = None,
              with_triton_interpreter: bool = False) -> Plan:
    device = resolve_device(device_name)
    notes = []
    interpreter = with_triton_interpreter and device.type == "cpu"
    if with_triton_interpreter and not interpreter:
        notes.append("the Triton interpreter is for CPU runs only; not used")
    fusedloss = import_fusedloss(with_triton_interpreter=interpreter)
    if interpreter and "triton" not in fusedloss.available_backends(device):
        notes.append("fusedloss was imported before TRITON_INTERPRET=1 was set: no triton on CPU")

    preset = get_preset(preset_name, device)
    known = known_losses(fusedloss)
    requested_losses = split_list(losses)
    unknown = [name for name in requested_losses or () if name not in known]
    if unknown:
        raise PlanError(f"unknown loss(es) {unknown}; known: {known}")
    cases = build_cases(preset, requested_losses, known)
    if not cases:
        raise PlanError(f"the {preset.name} preset has no case for loss(es) {requested_losses}")
    requested = split_list(providers) or (list(preset.providers) if preset.providers else None)
    try:
        provider_list, provider_notes = resolve_providers(fusedloss, device, requested, use_interpreter=interpreter)
    except RequestError as error:
        raise PlanError(str(error)) from None
    notes += provider_notes
    if os.environ.get("TRITON_INTERPRET") == "1" and device.type == "cuda":
        notes.append("TRITON_INTERPRET=1 is set: CUDA timings of Triton code are meaningless")
    return Plan(device, preset, cases, provider_list, fusedloss, notes)
