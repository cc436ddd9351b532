"""Benchmark fusedloss against eager and torch.compile'd PyTorch on this machine's device.

    python bench/main.py                     # quick preset on CUDA if present, else CPU
    python bench/main.py --preset full --losses dice,focal --providers eager,triton

Prints progress and a table; writes results.json, results.md and throughput.png to --out.
Columns, floor and roofline are described in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # when imported in-process (tests), not run as a script
    sys.path.insert(0, str(BENCH_DIR))

import _cases  # noqa: E402
import _memory  # noqa: E402
import _peers  # noqa: E402
import _plan  # noqa: E402
import _report  # noqa: E402
import _run  # noqa: E402
import _timing  # noqa: E402
import torch  # noqa: E402


class _Stopped(BaseException):
    """SIGTERM (e.g. from `timeout`): stop measuring but still write what was measured.

    A BaseException so that the per-measurement error handling does not swallow it."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=_cases.PRESET_NAMES, default="quick", help="case list (default: quick)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if present)")
    parser.add_argument(
        "--losses",
        default=None,
        help="comma-separated short names, e.g. dice,focal,multiclass_dice,dice_ce (default: the preset's)",
    )
    parser.add_argument(
        "--providers",
        default=None,
        help="comma-separated: eager, compile, a backend name (triton, cuda, cpu) or 'fused' for every backend "
        "(default: all that can run)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="output folder (default: bench/out)")
    parser.add_argument(
        "--with-triton-interpreter",
        action="store_true",
        help="on CPU, also run the Triton kernels through TRITON_INTERPRET=1 (slow; cases up to 1M elements)",
    )
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds; past this, start no new case (results so far are still written)")
    return parser.parse_args(argv)


def _git_commit():
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _metadata(args, device, fusedloss, copy_bytes_per_s):
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "preset": args.preset,
            "device": str(device), "device_name": device_name, "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__, "triton": triton_version, "fusedloss": getattr(fusedloss, "__version__", None),
            "commit": _git_commit(), "python": platform.python_version(),
            "triton_interpreter": os.environ.get("TRITON_INTERPRET") == "1",
            "timer": "CUDA events, median" if device.type == "cuda" else "time.perf_counter, median",
            "copy_gbps": round(copy_bytes_per_s / 1e9, 2), "extra_mem": _memory.method(device),
            **{peer: _peers.version(peer) for peer in _peers.PEERS}}


def run(args) -> tuple[dict, list[dict], list[str]]:
    """Measure every (case, provider) of the run; returns meta, rows and notes."""
    started = time.monotonic()
    try:
        plan = _plan.make_plan(args.preset, args.device, args.losses, args.providers, args.with_triton_interpreter)
    except _plan.PlanError as error:  # options this machine cannot run: a usage error
        _log(f"error: {error}")
        raise SystemExit(2) from None
    device, cases, providers, notes = plan.device, plan.cases, plan.providers, plan.notes
    timing = plan.preset.timing

    _log(f"device {device}: measuring copy bandwidth ...")
    copy_bytes_per_s = _timing.copy_bandwidth_bytes_per_s(device, timing)
    meta = _metadata(args, device, plan.fusedloss, copy_bytes_per_s)
    _log(
        f"copy bandwidth {meta['copy_gbps']} GB/s; {len(cases)} cases x {len(providers)} providers "
        f"({', '.join(p.name for p in providers)})"
    )

    rows = []
    left_out = {}  # (provider, reason) -> how many cases
    total = len(cases) * len(providers)
    count = 0
    try:
        for case in cases:
            if args.time_budget is not None and time.monotonic() - started > args.time_budget:
                notes.append(f"time budget of {args.time_budget:g} s spent: {total - count} measurement(s) not run")
                break
            available = _run.available_memory_bytes(device)
            for provider in providers:
                count += 1
                if _run.fits(case, available):
                    row = _run.measure(case, provider, device, timing, copy_bytes_per_s)
                else:
                    row = _run.base_row(case, provider)
                    row.update(status="skipped", note="does not fit in memory")
                if row["status"] == "skipped":
                    key = (provider.name, row["note"])
                    left_out[key] = left_out.get(key, 0) + 1
                else:
                    rows.append(row)
                _log(f"[{count:>{len(str(total))}}/{total}] {case.label} {provider.name}: {_progress_result(row)}")
    except _Stopped:
        notes.append(f"stopped by SIGTERM after {count} of {total} measurements")
    for (provider_name, reason), how_many in left_out.items():
        notes.append(f"{provider_name}: {how_many} case(s) left out: {reason}")
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    _report.add_comparisons(rows)
    return meta, rows, notes


def _progress_result(row):
    if row["status"] != "ok":
        return f"{row['status']} ({row['note']})"
    return f"{row['time_ms']:.4g} ms, {row['gbps']:.3g} GB/s"


def _log(message):
    print(message, file=sys.stderr, flush=True)


def write_outputs(out: Path, meta, rows, notes) -> list[Path]:
    """The three outputs; a missing matplotlib skips only the plot."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / _report.JSON_NAME, out / _report.MARKDOWN_NAME]
    plot_problem = _report.write_plot(out / _report.PLOT_NAME, meta, rows)
    if plot_problem:
        notes.append(plot_problem)
        _log(plot_problem)
    else:
        written.append(out / _report.PLOT_NAME)
    _report.write_json(written[0], meta, rows, notes)
    _report.write_markdown(written[1], meta, rows, notes)
    return written


def main(argv=None) -> int:
    """Entry point. Exit status: 0; 1 when any measurement raised an error (rows that a
    provider cannot run, or that do not fit, are skipped, not errors); 2 for options this
    machine cannot run (unknown loss, no CUDA)."""
    args = parse_args(argv)

    def stop(signum, frame):
        raise _Stopped()

    # signal handlers can only be installed from the main thread
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
    try:
        meta, rows, notes = run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(_report.format_table(rows))
    for note in notes:
        print(f"note: {note}")
    for path in write_outputs(args.out, meta, rows, notes):
        print(f"wrote {path}")
    errors = sum(row["status"] == "error" for row in rows)
    if errors:
        print(f"{errors} measurement(s) failed; see the note column")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
