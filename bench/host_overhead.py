"""Host overhead of one loss call, measured on the CPU (issue 15, item 4).

At common 2-D sizes a GPU finishes a fused loss in about 13 us (the memory floor of a 16x1x512x512
Dice on an H200), so the Python path from the public call to the kernel launches sets the speed.
Two measurements that need no GPU:

(a) ``time``: the per-call host time of ``loss(x, t)`` + ``backward()`` through the op layer (the
    ``cpu`` backend, whose kernels take a few microseconds at 1K elements) against the eager
    reference at the same size, and at a larger size for context; and of the ``triton`` backend with
    its launches stubbed out as in (b) (the host work alone). Median and IQR of single calls
    (time.perf_counter_ns), after a warm-up, the cases interleaved in blocks so that a change of
    load hits them all; torch.set_num_threads(1); x.grad set to None before each call.
(b) ``count``: under TRITON_INTERPRET=1 with the Triton launch stubbed out (the interpreter's
    ``InterpretedFunction.run`` records the kernel and returns: nothing runs), what the Triton path
    does around its launches, forward (the public call) and backward (``loss.backward()``)
    separately: Python function calls (sys.setprofile 'call' events, split into fusedloss's own and
    the rest by the code's file: torch, triton, other), torch function calls (a TorchFunctionMode)
    and dispatched ops (a TorchDispatchMode: aten ops and the fused ops themselves). The same for
    the ``cpu`` backend (its kernels are C++, so its count ends at the op). Each count is one call
    after three warm-up calls, in a pass of its own (the modes' own frames stay out of the Python
    count). Under the interpreter the launch itself is the interpreter's, not Triton's JIT launcher
    (``JITFunction.run``, which a GPU call also pays), and ``on_input_device`` enters no CUDA
    device context: the counts are the fusedloss and torch work around the launches.

Each measurement runs in a subprocess per tree (PYTHONPATH pointing at it), the trees alternating,
``--rounds`` times; the time samples of all rounds are pooled per tree and case.

    python bench/host_overhead.py --out DIR                      # this tree
    python bench/host_overhead.py --out DIR --tree before=/tmp/host_before --tree after=. --rounds 3

writes DIR/results.json and DIR/results.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The losses measured, at 1K elements and at a larger size for context (binary shape, multi-class shape).
LOSSES = ("dice", "dice_module", "focal", "dice_bce", "dice_ce", "lovasz_hinge")
SIZES = {"1K": ((1, 1, 32, 32), (1, 4, 16, 16)), "64K": ((4, 1, 128, 128), (1, 4, 128, 128))}
TIME_BACKENDS = ("cpu", "reference")
COUNT_BACKENDS = ("triton", "cpu")
LOSS_TEXT = {
    "dice": "dice_loss(x, t)",
    "dice_module": "DiceLoss()(x, t)",
    "focal": "focal_loss(x, t)",
    "dice_bce": "dice_bce_loss(x, t)",
    "dice_ce": "dice_ce_loss(x, y), 4 classes",
    "lovasz_hinge": "lovasz_hinge_loss(x, t)",
}


def make_case(loss: str, size: str, backend: str):
    """(call, input): ``call()`` returns the loss of a fresh forward; fp32 logits, a float {0, 1} target
    (binary) or an int64 class map (multi-class)."""
    import torch

    import fusedloss
    from fusedloss import functional as F

    generator = torch.Generator().manual_seed(0)
    binary_shape, multiclass_shape = SIZES[size]
    if loss == "dice_ce":
        x = torch.randn(multiclass_shape, generator=generator).requires_grad_(True)
        y = torch.randint(0, multiclass_shape[1], multiclass_shape[:1] + multiclass_shape[2:], generator=generator)
        return (lambda: F.dice_ce_loss(x, y, backend=backend)), x
    x = torch.randn(binary_shape, generator=generator).requires_grad_(True)
    t = (torch.rand(binary_shape, generator=generator) > 0.5).float()
    if loss == "dice_module":
        module = fusedloss.DiceLoss(backend=backend)
        return (lambda: module(x, t)), x
    fn = {"dice": F.dice_loss, "focal": F.focal_loss, "dice_bce": F.dice_bce_loss,
          "lovasz_hinge": F.lovasz_hinge_loss}[loss]
    return (lambda: fn(x, t, backend=backend)), x


# ---------------------------------------------------------------------------------------------
# (a) time
# ---------------------------------------------------------------------------------------------

def time_worker(calls_1k: int, calls_large: int, blocks: int) -> dict:
    """Single-call times (ns) of every case, interleaved: ``blocks`` rounds over the cases."""
    with stubbed_triton_launches():
        return _time_cases(calls_1k, calls_large, blocks)


def _time_cases(calls_1k: int, calls_large: int, blocks: int) -> dict:
    import torch

    torch.set_num_threads(1)
    cases = {}
    for size in SIZES:
        for loss in LOSSES:
            for backend in TIME_BACKENDS + (("triton",) if size == "1K" else ()):
                call, x = make_case(loss, size, backend)
                cases[f"{loss}/{backend}/{size}"] = (call, x, calls_1k if size == "1K" else calls_large)
    samples = {key: [] for key in cases}
    load_start = os.getloadavg()
    for call, x, calls in cases.values():  # warm-up: libraries loaded, caches filled
        for _ in range(max(20, calls // (2 * blocks))):
            x.grad = None
            call().backward()
    clock = time.perf_counter_ns
    for _ in range(blocks):
        for key, (call, x, calls) in cases.items():
            out = samples[key]
            for _ in range(max(1, calls // blocks)):
                x.grad = None  # zero_grad(set_to_none=True): each backward writes a fresh gradient
                start = clock()
                call().backward()
                out.append(clock() - start)
    return {"samples_ns": samples, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# (b) count
# ---------------------------------------------------------------------------------------------

class _Paused:
    """Set while the launch stub does its own bookkeeping: nothing it does is counted."""

    on = False


@contextlib.contextmanager
def stubbed_triton_launches():
    """Under TRITON_INTERPRET=1: every kernel launch records its kernel's name and returns without
    running (its target-check flags, when it has them, set to 'all valid' so the path goes on as
    for a valid target). Yields the list of launched kernels' names."""
    import torch
    from torch.utils._python_dispatch import _disable_current_modes
    from triton.runtime import interpreter

    launched = []
    original = interpreter.InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        _Paused.on = True
        try:
            launched.append(self.fn.__name__)
            if "ok_ptr" in self.arg_names:
                ok = args[self.arg_names.index("ok_ptr")]
                if torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack():
                    with torch._C.DisableTorchFunction(), _disable_current_modes():
                        ok.fill_(1)
                else:
                    ok.fill_(1)
        finally:
            _Paused.on = False

    interpreter.InterpretedFunction.run = run
    try:
        yield launched
    finally:
        interpreter.InterpretedFunction.run = original


def _category(filename: str, package: str) -> str:
    if filename.startswith(package):
        return "fusedloss"
    for name in ("torch", "triton"):
        if f"{os.sep}{name}{os.sep}" in filename:
            return name
    return "other"


@contextlib.contextmanager
def python_calls():
    """Count Python function calls ('call' events) by category, and calls of C functions ('c_call'),
    on this thread; the frames of this file are left out."""
    import fusedloss

    package = str(Path(fusedloss.__file__).resolve().parent) + os.sep
    here = str(Path(__file__).resolve())
    counts = collections.Counter()
    own = collections.Counter()  # the functions by category and name
    categories = {}

    def profile(frame, event, arg):
        if _Paused.on:
            return
        if event == "call":
            code = frame.f_code
            filename = code.co_filename
            category = categories.get(filename)
            if category is None:
                category = categories[filename] = "harness" if filename == here else _category(filename, package)
            if category == "harness":
                return
            counts[category] += 1
            own[f"{category}:{Path(filename).stem}.{code.co_name}"] += 1
        elif event == "c_call":
            counts["c_calls"] += 1

    sys.setprofile(profile)
    try:
        yield counts, own
    finally:
        sys.setprofile(None)


def _fused_overloads():
    """The fused ops of every namespace loaded, each name a packet, its C function and its
    overload may be seen as, mapped to the overload."""
    import torch

    from fusedloss.ops.schema import ALL_SCHEMAS

    found = {}
    for namespace in ("fusedloss_C", "fusedloss_triton"):
        ops = getattr(torch.ops, namespace)
        for name in ALL_SCHEMAS:
            if not hasattr(ops, name):
                continue
            packet = getattr(ops, name)
            for alias in (packet, packet._op, packet.default):
                found[alias] = packet.default
    return found


def _below(args, after_autograd: bool):
    """The dispatch keys to run a fused op at from inside a mode: the tensors' device keys (and their
    autograd keys, from a function mode, which sits above autograd)."""
    import torch

    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    for arg in args:
        if isinstance(arg, torch.Tensor):
            keys = keys | torch._C._dispatch_keys(arg)
    keys = keys - torch._C._dispatch_tls_local_exclude_set()
    keys = keys.remove(torch._C.DispatchKey.ADInplaceOrView)
    return keys & torch._C._after_autograd_keyset if after_autograd else keys


def _name(func) -> str:
    from torch.overrides import resolve_name

    try:
        return resolve_name(func) or repr(func)
    except Exception:  # noqa: BLE001 - a name for the table only
        return repr(func)


def torch_calls():
    """(function mode, dispatch mode) counting torch function calls and dispatched ops. A mode leaves
    itself while it runs the call it intercepted, so a fused op's kernel (a Triton launcher in
    Python, or a C++ kernel calling aten ops) would go unseen: a fused op is run from inside the
    mode again (``redispatch``, below the torch-function layer), and so is ``Tensor.backward``."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    fused = _fused_overloads()

    class Functions(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if _Paused.on:
                return func(*args, **kwargs)
            op = fused.get(func) if getattr(func, "__hash__", None) else None
            if op is not None:
                self.counts[str(op)] += 1
                with self:
                    return op.redispatch(_below(args, after_autograd=False), *args, **kwargs)
            if func is torch.Tensor.backward or func is torch.autograd.backward:
                self.counts[_name(func)] += 1
                with self:  # what torch.autograd.backward does for a loss, without its torch-function check
                    loss = args[0]
                    grad = torch.ones_like(loss, memory_format=torch.preserve_format)
                    return torch.autograd.graph._engine_run_backward((loss,), (grad,), False, False, (),
                                                                     allow_unreachable=True, accumulate_grad=True)
            self.counts[_name(func)] += 1
            return func(*args, **kwargs)

    class Dispatched(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if _Paused.on:
                return func(*args, **kwargs)
            self.counts[str(func)] += 1
            if func.namespace.startswith("fusedloss"):
                with self:
                    return func.redispatch(_below(args, after_autograd=True), *args, **kwargs)
            return func(*args, **kwargs)

    return Functions(), Dispatched()


def _summary(counter: collections.Counter) -> dict:
    return {"total": sum(counter.values()), "aten": sum(n for name, n in counter.items() if name.startswith("aten.")),
            "by_name": dict(counter.most_common())}


def _python_summary(counts: collections.Counter, functions: collections.Counter) -> dict:
    categories = ("fusedloss", "torch", "triton", "other")
    own = {name.split(":", 1)[1]: n for name, n in functions.most_common() if name.startswith("fusedloss:")}
    others = {name: n for name, n in functions.most_common() if not name.startswith("fusedloss:")}
    return {"total": sum(counts[name] for name in categories), **{name: counts[name] for name in categories},
            "c_calls": counts["c_calls"], "fusedloss_by_name": own, "others_by_name": others}


def count_case(loss: str, backend: str, warmup: int = 3) -> dict:
    """The counts of one forward and one backward of ``loss`` on ``backend`` (1K elements), each kind of
    count in a pass of its own: {phase: {"python", "torch_functions", "dispatched_ops", "launches"}}."""
    call, x = make_case(loss, "1K", backend)
    result = {"forward": {}, "backward": {}}
    with stubbed_triton_launches() if backend == "triton" else contextlib.nullcontext([]) as launched:
        for _ in range(warmup):
            x.grad = None
            call().backward()
        x.grad = None
        start = len(launched)
        with python_calls() as (counts, functions):
            loss_value = call()
        result["forward"].update(python=_python_summary(counts, functions), launches=launched[start:])
        start = len(launched)
        with python_calls() as (counts, functions):
            loss_value.backward()
        result["backward"].update(python=_python_summary(counts, functions), launches=launched[start:])
        functions, dispatched = torch_calls()
        for kind, mode in (("torch_functions", functions), ("dispatched_ops", dispatched)):
            x.grad = None
            with mode:
                loss_value = call()
            result["forward"][kind] = _summary(mode.counts)
            mode.counts = collections.Counter()
            with mode:
                loss_value.backward()
            result["backward"][kind] = _summary(mode.counts)
    return result


def count_worker() -> dict:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("the count worker runs under TRITON_INTERPRET=1 (set before fusedloss is imported)")
    import torch

    torch.set_num_threads(1)
    return {backend: {loss: count_case(loss, backend) for loss in LOSSES} for backend in COUNT_BACKENDS}


# ---------------------------------------------------------------------------------------------
# where the time goes: cProfile of many calls
# ---------------------------------------------------------------------------------------------

PROFILED = (("dice", "cpu"), ("dice", "triton"), ("dice_ce", "cpu"), ("dice_ce", "triton"))


def profile_worker(calls: int, top: int = 15) -> dict:
    """The functions with the most own time over ``calls`` fwd + bwd calls (1K elements; Triton
    launches stubbed), per (loss, backend): cProfile's tottime per call, in us (inflated by the
    profiler, which costs most where the calls are many and small)."""
    import cProfile
    import pstats

    import torch

    torch.set_num_threads(1)
    out = {}
    with stubbed_triton_launches():
        for loss, backend in PROFILED:
            call, x = make_case(loss, "1K", backend)
            for _ in range(20):
                x.grad = None
                call().backward()
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                x.grad = None
                call().backward()
            profiler.disable()
            stats = pstats.Stats(profiler).stats
            rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
            total = sum(entry[2] for entry in stats.values())
            out[f"{loss}/{backend}"] = {
                "total_us_per_call": round(total / calls * 1e6, 1),
                "top_tottime_us_per_call": [
                    {"function": _where(key), "calls_per_call": round(entry[1] / calls, 2),
                     "tottime_us": round(entry[2] / calls * 1e6, 1), "cumtime_us": round(entry[3] / calls * 1e6, 1)}
                    for key, entry in rows],
            }
    return out


def _where(key) -> str:
    filename, line, name = key
    if filename == "~":
        return name  # a built-in
    parts = Path(filename).parts
    for anchor in ("fusedloss", "torch", "triton"):
        if anchor in parts:
            filename = "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor):])
            break
    return f"{filename}:{line}({name})"


# ---------------------------------------------------------------------------------------------
# the runs: each tree in a subprocess, alternating
# ---------------------------------------------------------------------------------------------

def _git(tree: Path, *args) -> str:
    try:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _worker(tree: Path, kind: str, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    env.pop("FUSEDLOSS_BACKEND", None)
    env["TRITON_INTERPRET"] = "1"  # the Triton path runs with its launches stubbed out (cpu and reference: no matter)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind, *extra], env=env,
                          capture_output=True, text=True, cwd=str(tree))
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} worker failed in {tree}:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout)
    # the worker must have imported the tree's fusedloss, not another one
    if Path(result["fusedloss_file"]).resolve().parents[1] != tree.resolve():
        raise RuntimeError(f"the {kind} worker for {tree} imported {result['fusedloss_file']}")
    return result


def _quantiles(samples_ns: list[int]) -> dict:
    us = sorted(s / 1000 for s in samples_ns)
    q1, median, q3 = statistics.quantiles(us, n=4)
    return {"median_us": round(median, 1), "q1_us": round(q1, 1), "q3_us": round(q3, 1),
            "iqr_us": round(q3 - q1, 1), "samples": len(us)}


def _machine() -> dict:
    import torch

    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "triton": triton_version, "platform": platform.platform()}


def run(trees: dict, rounds: int, calls_1k: int, calls_large: int, blocks: int, profile_calls: int) -> dict:
    timing = {name: collections.defaultdict(list) for name in trees}
    per_round = {name: collections.defaultdict(list) for name in trees}
    loads = []
    counts = {}
    extra = ["--calls-1k", str(calls_1k), "--calls-large", str(calls_large), "--blocks", str(blocks)]
    profiles = {}
    for name, tree in trees.items():  # the counts are deterministic: once per tree
        counts[name] = _worker(tree, "count", [])["counts"]
        profiles[name] = _worker(tree, "profile", ["--profile-calls", str(profile_calls)])["profile"]
    for round_index in range(rounds):
        order = list(trees.items()) if round_index % 2 == 0 else list(reversed(trees.items()))
        for name, tree in order:
            before = os.getloadavg()
            result = _worker(tree, "time", extra)
            loads.append({"round": round_index, "tree": name, "loadavg_before": before,
                          "loadavg_worker_start": result["loadavg_start"],
                          "loadavg_worker_end": result["loadavg_end"]})
            for key, samples in result["samples_ns"].items():
                timing[name][key].extend(samples)
                per_round[name][key].append(round(statistics.median(samples) / 1000, 1))
            print(f"round {round_index + 1}/{rounds} {name}: done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    times = {name: {key: dict(_quantiles(samples), round_medians_us=per_round[name][key])
                    for key, samples in by_key.items()} for name, by_key in timing.items()}
    return {
        "date": datetime.date.today().isoformat(),
        "machine": _machine(),
        "trees": {name: {"path": str(tree), "commit": _git(tree, "rev-parse", "HEAD"),
                         "dirty": bool(_git(tree, "status", "--porcelain", "--untracked-files=no"))}
                  for name, tree in trees.items()},
        "method": {"rounds": rounds, "calls_per_round_1K": calls_1k, "calls_per_round_large": calls_large,
                   "blocks": blocks, "torch_threads": 1, "sizes": {size: {"binary": list(shapes[0]),
                                                                          "multiclass": list(shapes[1])}
                                                                   for size, shapes in SIZES.items()}},
        "load": loads,
        "time": times,
        "counts": counts,
        "profile": profiles,
    }


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    names = list(results["trees"])
    lines = [f"# Host overhead of a loss call ({results['date']})", ""]
    machine = results["machine"]
    lines += [f"{machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, torch {machine['torch']}, "
              f"Triton {machine['triton']}. Trees: "
              + "; ".join(f"{name} = {tree['commit'][:7]}{' + changes' if tree['dirty'] else ''}"
                          for name, tree in results["trees"].items()) + ".", ""]
    load = [entry["loadavg_before"][0] for entry in results["load"]]
    if load:
        lines += [f"1-minute load average before each worker: {min(load):.2f} to {max(load):.2f}.", ""]
    lines += ["## (a) fwd + bwd host time per call (us; median [IQR] of single calls, all rounds pooled)", "",
              "triton: under TRITON_INTERPRET=1 with the launches stubbed out (host work only).", ""]
    header = "| loss | size | backend | " + " | ".join(names)
    if len(names) == 2:
        header += f" | {names[0]} / {names[1]}"
    lines += [header + " |", "|" + "---|" * (header.count("|") - 1)]
    for size in SIZES:
        for loss in LOSSES:
            for backend in ("cpu", "triton", "reference"):
                key = f"{loss}/{backend}/{size}"
                if key not in results["time"][names[0]]:
                    continue
                rows = [results["time"][name][key] for name in names]
                cells = [f"{row['median_us']:.0f} [{row['q1_us']:.0f}-{row['q3_us']:.0f}]" for row in rows]
                if len(names) == 2:
                    cells.append(f"{rows[0]['median_us'] / rows[1]['median_us']:.2f}x")
                lines.append(f"| {LOSS_TEXT[loss]} | {size} | {backend} | " + " | ".join(cells) + " |")
    lines += ["", "## (b) counts per call (1K elements; Triton launches stubbed under TRITON_INTERPRET=1)", "",
              "Python calls: 'call' events (fusedloss's own + torch + triton + other); torch fn: TorchFunctionMode "
              "calls; ops: TorchDispatchMode ops (aten + the fused ops); launches: Triton kernels launched.", ""]
    for backend in COUNT_BACKENDS:
        header = f"| {backend} backend | phase | " + " | ".join(
            f"Python calls {name} (own) | torch fn {name} | ops {name} (aten)" for name in names) + " | launches |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for loss in LOSSES:
            for phase in ("forward", "backward"):
                cells = []
                for name in names:
                    entry = results["counts"][name][backend][loss][phase]
                    python = entry["python"]
                    ops = entry["dispatched_ops"]
                    cells += [f"{python['total']} ({python['fusedloss']})", str(entry["torch_functions"]["total"]),
                              f"{ops['total']} ({ops['aten']})"]
                launches = len(results["counts"][names[-1]][backend][loss][phase]["launches"])
                lines.append(f"| {LOSS_TEXT[loss]} | {phase} | " + " | ".join(cells) + f" | {launches} |")
        lines.append("")
    lines += ["## Where the time goes (cProfile, fwd + bwd at 1K; own time per call, us, profiler included)", ""]
    for name in names:
        for case, entry in results["profile"][name].items():
            rows = entry["top_tottime_us_per_call"][:8]
            top = ", ".join(f"{row['function']} {row['tottime_us']:.0f}" for row in rows)
            lines.append(f"- {name}, {case} ({entry['total_us_per_call']:.0f} us a call in all): {top}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="a source tree to measure (repeat to compare; default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls-1k", type=int, default=1200, help="timed calls per case and round at 1K")
    parser.add_argument("--calls-large", type=int, default=150, help="timed calls per case and round at 64K")
    parser.add_argument("--blocks", type=int, default=6, help="interleaving blocks per round")
    parser.add_argument("--profile-calls", type=int, default=1000, help="calls per profiled case")
    parser.add_argument("--worker", choices=("time", "count", "profile"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import fusedloss

        if args.worker == "count":
            payload = {"counts": count_worker()}
        elif args.worker == "profile":
            payload = {"profile": profile_worker(args.profile_calls)}
        else:
            payload = time_worker(args.calls_1k, args.calls_large, args.blocks)
        payload["fusedloss_file"] = fusedloss.__file__
        json.dump(payload, sys.stdout)
        return
    if args.out is None:
        parser.error("--out is required")
    trees = {}
    for item in args.tree or [f"this={REPO}"]:
        name, _, path = item.partition("=")
        trees[name] = Path(path).resolve()
    results = run(trees, args.rounds, args.calls_1k, args.calls_large, args.blocks, args.profile_calls)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
