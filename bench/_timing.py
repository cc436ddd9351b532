"""How long: timing device work correctly, and the device's measured copy bandwidth."""

from __future__ import annotations

import statistics
import time

import torch
from _cases import Timing


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_seconds(step, device: torch.device, timing: Timing, use_events: bool = True) -> list[float]:
    """Times of single timed calls of `step`, after warm-up.

    CUDA: one pair of events around each call (device time, launch gaps included, no host
    clock), unless use_events is False. Otherwise perf_counter around each call followed
    by a device synchronisation (a no-op on CPU).
    The caller has already made the first (compiling, autotuning) call.
    """
    for _ in range(timing.warmup):
        step()
    synchronize(device)
    if device.type == "cuda" and use_events:
        return _sample_cuda(step, device, timing)
    samples = []
    while len(samples) < timing.repeats:
        start = time.perf_counter()
        step()
        synchronize(device)
        samples.append(time.perf_counter() - start)
        if len(samples) >= timing.min_repeats and sum(samples) >= timing.max_seconds:
            break
    return samples


def _sample_cuda(step, device: torch.device, timing: Timing) -> list[float]:
    # Estimate one call's time from a short burst, then size the number of repeats to the
    # time allowed, as triton.testing.do_bench does; all events are read after one sync.
    probe_start = torch.cuda.Event(enable_timing=True)
    probe_end = torch.cuda.Event(enable_timing=True)
    probe_start.record()
    for _ in range(3):
        step()
    probe_end.record()
    synchronize(device)
    per_call_s = max(probe_start.elapsed_time(probe_end) / 3 / 1e3, 1e-7)
    count = int(timing.max_seconds / per_call_s)
    count = max(timing.min_repeats, min(timing.repeats, count))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    for start, end in zip(starts, ends):
        start.record()
        step()
        end.record()
    synchronize(device)
    return [start.elapsed_time(end) / 1e3 for start, end in zip(starts, ends)]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def copy_bandwidth_bytes_per_s(device: torch.device, timing: Timing, use_events: bool = True) -> float:
    """Measured device-to-device copy rate, counting bytes read plus bytes written.

    The buffer is far larger than any cache: 1 GiB on CUDA, 256 MiB elsewhere.
    """
    numel = (1 << 28) if device.type == "cuda" else (1 << 26)
    source = torch.rand(numel, device=device)
    destination = torch.empty_like(source)

    def copy():
        destination.copy_(source)

    copy()
    samples = sample_seconds(copy, device, timing, use_events)
    bytes_moved = 2 * source.numel() * source.element_size()
    return bytes_moved / median(samples)
