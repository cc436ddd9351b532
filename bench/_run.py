"""One measurement: a case run by one provider, turned into a result row."""

from __future__ import annotations

import time

import torch
from _cases import Case, make_inputs, make_step
from _memory import extra_memory_bytes
from _providers import COMPILE, Provider, Unavailable
from _timing import median, sample_seconds, synchronize


def base_row(case: Case, provider: Provider) -> dict:
    return {
        "loss": case.loss,
        "family": case.family,
        "shape": case.shape_str,
        "numel": case.numel,
        "classes": case.classes,
        "target_shape": case.target_shape_str,
        "layout": case.layout,
        "variant": case.variant,
        "dtype": case.dtype,
        "target_dtype": case.target_dtype,
        "mode": case.mode,
        "provider": provider.name,
        "floor_bytes": case.floor_bytes,
        "time_ms": None,
        "time_min_ms": None,
        "time_max_ms": None,
        "repeats": 0,
        "gbps": None,
        "roofline": None,
        "speedup_vs_eager": None,
        "speedup_vs_compile": None,
        "speedup_vs_smp": None,
        "speedup_vs_monai": None,
        "extra_mem_bytes": None,
        "first_call_s": None,
        "loss_value": None,
        "status": "ok",  # ok | skipped | error
        "note": "",
    }


def fits(case: Case, available_bytes: int | None) -> bool:
    return available_bytes is None or case.rough_peak_bytes() <= available_bytes


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a case may use: 80% of free device memory, or 60% of MemAvailable on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(0.6 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return None


def measure(
    case: Case, provider: Provider, device: torch.device, timing, copy_bytes_per_s: float, sampler=None
) -> dict:
    """Run and time one (case, provider); never raises for a provider's failure.

    `sampler(step) -> list of seconds` replaces the built-in timer (the pytest-benchmark
    suite passes its own); the row is built the same way either way.
    """
    row = base_row(case, provider)
    try:
        loss_fn = provider.loss_fn(case)
    except Unavailable as why:
        row.update(status="skipped", note=str(why))
        return row
    try:
        logits, target = make_inputs(case, device)
        step = make_step(loss_fn, case, logits, target)

        # First call: compile / autotune / lazy init, reported but never timed.
        start = time.perf_counter()
        loss_value, _ = step()
        synchronize(device)
        row["first_call_s"] = time.perf_counter() - start
        row["loss_value"] = float(loss_value)

        row["extra_mem_bytes"] = extra_memory_bytes(step, loss_fn, case, logits, target, device)
        if sampler is None:
            samples = sample_seconds(step, device, timing)
        else:
            samples = sampler(step)
        seconds = median(samples)
        row.update(time_ms=1e3 * seconds, time_min_ms=1e3 * min(samples), time_max_ms=1e3 * max(samples),
                   repeats=len(samples), gbps=case.floor_bytes / seconds / 1e9,
                   roofline=case.floor_bytes / seconds / copy_bytes_per_s)
    except torch.OutOfMemoryError:  # a limit of this machine, not a failure of the provider
        row.update(status="skipped", note="out of memory")
    except Exception as error:  # recorded in the row; the run goes on
        row.update(status="error", note=_describe(error, provider))
    return row


def _describe(error: Exception, provider: Provider) -> str:
    lines = f"{type(error).__name__}: {error}".strip().splitlines()
    first = lines[0] if lines else type(error).__name__
    if provider.kind == COMPILE and isinstance(error, torch._dynamo.exc.TorchDynamoException):
        first = "torch.compile failed: " + first
    return first[:300]
