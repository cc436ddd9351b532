"""Compile recorded Triton kernel launches for a real GPU, ahead of time and
without one (Triton's own compiler and ptxas, target sm_90):

    python tests/triton_aot.py LAUNCHES.json [SUMMARY.json] [--profile PROFILE.json]

LAUNCHES.json: a list of launches as tests/test_triton_compiles.py records them
under the interpreter. Block sizes are set to what the CUDA plans choose (the
interpreter's plans use larger tiles), and each finalize launch is compiled
again with the partial-block shapes of a large GPU grid.

Each launch is specialised as a GPU launch of the same arguments would be: the
running Triton's own binder (the one JITFunction.run calls) and _pack_args turn
the recorded arguments into the signature, the constexprs and the attributes, so
a pointer aligned to 16 bytes or an integer divisible by 16 gets
tt.divisibility=16, and an integer equal to 1 becomes a constexpr, by the rules
of the Triton that compiles. Identical specialisations compile once; the rest
compile in parallel (a process per core, at most MAX_JOBS; FUSEDLOSS_AOT_JOBS
sets the number), and a compiler crash is reported against its configuration.

Must run without TRITON_INTERPRET (the kernels must be JIT functions, not
interpreted ones). Prints one line per failure and a summary, writes the
summary to SUMMARY.json if given, and exits 1 if any configuration failed. With
--profile, also writes each configuration's compiled resources and main-loop SASS
(tests/compiled_profile.py) to PROFILE.json.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import json
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend

from fusedloss.kernels.multiclass_triton import cuda_tile

TARGET = GPUTarget("cuda", 90, 32)
# What the CUDA plans choose where the interpreter's take larger tiles, per kernel name: the
# largest BLOCK, the largest BLOCK_C, the [classes, pixels] tile (BLOCK_C * BLOCK_S), num_warps.
# binary_triton.LaunchPlan / multiclass_triton.LaunchPlan (a tile by the logits' element size)
_STREAMING = {"block": 2048, "tile": cuda_tile, "num_warps": 8}
_LOVASZ_ELEMENTWISE = {"block": 1024, "num_warps": 4}  # lovasz_triton._elementwise_block
_LOVASZ_CLASSES = {"block_c": 64, "tile": 2048, "num_warps": 8}  # lovasz_triton._class_blocks
CUDA_PLANS = {"_stats_kernel": _STREAMING, "_backward_kernel": _STREAMING, "_focal_map_kernel": _STREAMING,
              "_binary_errors_kernel": _LOVASZ_ELEMENTWISE, "_binary_chain_kernel": _LOVASZ_ELEMENTWISE,
              "_multiclass_errors_kernel": _LOVASZ_CLASSES, "_multiclass_chain_kernel": _LOVASZ_CLASSES}
# Block shapes a finalize gets on an H100/H200-sized grid (about 8 x 132 parts), per module: Triton
# 3.6 crashed compiling the finalize kernels for shapes like these. binary_triton: (GROUP_BLOCK,
# PART_BLOCK); multiclass_triton (finalize_plan): 16 classes over the parts of the batch, 2 classes
# over all of them, 16 classes over a sample's few chunks, with the element partials of ~1056 programs.
GPU_FINALIZE_BLOCKS = {
    "binary_triton": tuple({"GROUP_BLOCK": group, "PART_BLOCK": part}
                           for group, part in ((1, 1024), (4, 1024), (128, 2))),
    "multiclass_triton": tuple({"CLASS_BLOCK": classes, "PART_BLOCK": part, "ELEM_BLOCK": 2048}
                               for classes, part in ((16, 128), (2, 1024), (16, 2))),
}
_DTYPES = {
    str(getattr(torch, name)): getattr(torch, name)
    for name in ("float32", "float64", "float16", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")
}
_TL_DTYPES = {
    str(getattr(tl, name)): getattr(tl, name)
    for name in ("float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64")
}


class GPUPointer:
    """A tensor argument as the binder sees it: a dtype and an address with the
    recorded address's remainder modulo 16 (what the alignment specialisation reads)."""

    def __init__(self, dtype: torch.dtype, address_mod_16: int):
        self.dtype = dtype
        self._address = (1 << 20) + address_mod_16

    def data_ptr(self) -> int:
        return self._address


def _argument(kind, value):
    if kind == "tensor":
        dtype, address_mod_16 = value
        return GPUPointer(_DTYPES[dtype], address_mod_16)
    if kind == "dtype":
        return _TL_DTYPES[value]
    if kind in ("int", "bool"):
        return value
    if kind == "float":
        return 0.5  # floats are never specialised on their value
    raise ValueError(f"argument of unexpected kind {kind}")


def gpu_arguments(launch: dict):
    """The recorded arguments (positional, in parameter order) and num_warps as a
    CUDA launch passes them: block sizes and num_warps from the CUDA plans (CUDA_PLANS);
    finalize launches once more per GPU_FINALIZE_BLOCKS."""
    names = [name for name, *_ in launch["args"]]
    values = [_argument(kind, value) for _, _, kind, value in launch["args"]]
    plan = CUDA_PLANS.get(launch["name"], {})
    value = dict(zip(names, values))
    if "BLOCK" in value and "block" in plan:
        value["BLOCK"] = max(16, min(plan["block"], value["BLOCK"]))
    if "BLOCK_C" in value and "block_c" in plan:
        value["BLOCK_C"] = min(plan["block_c"], value["BLOCK_C"])
        value["ONE_BLOCK"] = value["BLOCK_C"] >= value["num_classes"]
    if "BLOCK_S" in value and "tile" in plan:
        tile = plan["tile"](value["x_ptr"].dtype.itemsize) if callable(plan["tile"]) else plan["tile"]
        value["BLOCK_S"] = max(1, min(tile // value["BLOCK_C"], value["BLOCK_S"]))
    values = [value[name] for name in names]
    num_warps = plan.get("num_warps", launch["num_warps"])
    yield values, num_warps
    if launch["name"] == "_finalize_kernel":
        for blocks in GPU_FINALIZE_BLOCKS[launch["module"].rsplit(".", 1)[-1]]:
            # A renamed block parameter fails here rather than compile the recorded shape again.
            assert set(blocks) <= set(names), (launch["module"], sorted(blocks), names)
            yield [blocks.get(name, value) for name, value in zip(names, values)], num_warps


def _kind(value):
    if isinstance(value, torch.Tensor):
        # The address modulo 16: a GPU launch specialises pointers aligned to 16 bytes. Both
        # allocators align more (CPU 64 bytes, CUDA 512): a view's offset decides alike.
        return ["tensor", [str(value.dtype), value.data_ptr() % 16]]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", None]
    if isinstance(value, tl.dtype):
        return ["dtype", str(value)]
    raise TypeError(f"unexpected kernel argument {value!r}")


def record_launches(monkeypatch):
    """Patch the interpreter's launch to record (kernel, arguments, num_warps): the values
    of int and bool arguments, the dtype and alignment of tensors, constexprs as given.
    Returns the dict it fills, one entry per distinct launch (run under TRITON_INTERPRET=1)."""
    from triton.runtime import interpreter

    launches = {}
    run = interpreter.InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        parameters = list(inspect.signature(self.fn).parameters.values())
        bound = dict(zip((p.name for p in parameters), args)) | {
            name: value for name, value in kwargs.items() if name in {p.name for p in parameters}
        }
        launch = {"module": self.fn.__module__, "name": self.fn.__name__, "num_warps": kwargs.get("num_warps", 4),
                  "args": [[p.name, "constexpr" in str(p.annotation)] + _kind(bound[p.name]) for p in parameters]}
        launches[json.dumps(launch, sort_keys=True)] = launch
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    monkeypatch.setattr(interpreter.InterpretedFunction, "run", recording_run)
    return launches


_BINDERS = {}


def specialise(kernel, values, num_warps):
    """(signature, constexprs, attrs) of a GPU launch of ``kernel`` with these
    arguments: JITFunction.run's binder and _pack_args for the sm_90 backend."""
    from triton.runtime.jit import create_function_from_signature

    if kernel not in _BINDERS:
        backend = make_backend(TARGET)
        _BINDERS[kernel] = backend, create_function_from_signature(kernel.signature, kernel.params, backend)
    backend, binder = _BINDERS[kernel]
    bound_args, specialization, options = binder(*values, num_warps=num_warps)
    _, signature, constexprs, attrs = kernel._pack_args(
        backend, {"num_warps": num_warps}, bound_args, specialization, options
    )
    # Empty attribute lists (later versions keep them, 3.6 leaves them out) say nothing.
    return signature, constexprs, {path: attr for path, attr in attrs.items() if attr}


def _key(launch, signature, constexprs, attrs, num_warps) -> str:
    return json.dumps(
        [launch["module"], launch["name"], signature,
         sorted((list(path), str(value)) for path, value in constexprs.items()),
         sorted((list(path), attr) for path, attr in attrs.items()), num_warps],
        sort_keys=True,
    )


def describe(config) -> str:
    module, name, signature, constexprs, attrs, num_warps = config
    params = list(signature)
    constants = {params[path[0]]: value for path, value in constexprs.items()}
    return (
        f"{module}.{name} signature={[signature[p] for p in params if signature[p] != 'constexpr']} "
        f"constexprs={constants} divisible_by_16={[params[path[0]] for path in attrs]} num_warps={num_warps}"
    )


def configurations(launches):
    """Every distinct specialisation to compile: {key: (module, name, signature, constexprs, attrs,
    num_warps)}, the keys of those with each kind of GPU specialisation (SPECIALISATIONS), and
    {key: the labels of the calls that launched it} (a launch's "calls", where recorded)."""
    unique, kinds, calls = {}, {kind: set() for kind in SPECIALISATIONS}, {}
    for launch in launches:
        kernel = getattr(importlib.import_module(launch["module"]), launch["name"])
        for values, num_warps in gpu_arguments(launch):
            signature, constexprs, attrs = specialise(kernel, values, num_warps)
            key = _key(launch, signature, constexprs, attrs, num_warps)
            unique.setdefault(key, (launch["module"], launch["name"], signature, constexprs, attrs, num_warps))
            calls.setdefault(key, []).extend(c for c in launch.get("calls", ()) if c not in calls[key])
            types = list(signature.values())
            for kind, test in SPECIALISATIONS.items():
                if test(kernel, types, constexprs, attrs):
                    kinds[kind].add(key)
    return unique, kinds, calls


# Kinds of specialisation a GPU launch makes, counted in the summary.
SPECIALISATIONS = {
    "aligned_pointer": lambda kernel, types, constexprs, attrs: any(types[i].startswith("*") for i, *_ in attrs),
    "unaligned_pointer": lambda kernel, types, constexprs, attrs: any(
        t.startswith("*") and (i,) not in attrs for i, t in enumerate(types)
    ),
    "divisible_int": lambda kernel, types, constexprs, attrs: any(types[i][0] == "i" for i, *_ in attrs),
    "int_as_constexpr": lambda kernel, types, constexprs, attrs: any(
        not kernel.params[i].is_constexpr for i, *_ in constexprs
    ),
}


def _elements_per_iteration(constants: dict) -> int | None:
    # A streaming kernel's trip of its main loop: a block of elements, or a [classes, pixels] tile.
    if "BLOCK" in constants:
        return constants["BLOCK"]
    if "BLOCK_C" in constants and "BLOCK_S" in constants:
        return constants["BLOCK_C"] * constants["BLOCK_S"]
    return None


def compile_one(config, profile: bool = False) -> tuple[str | None, dict | None]:
    """(error, profile): the compiler's error (None when it compiled), and with ``profile``
    the compiled code's resources and main loop (tests/compiled_profile.py)."""
    module, name, signature, constexprs, attrs, num_warps = config
    kernel = getattr(importlib.import_module(module), name)
    try:
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs, attrs), target=TARGET, options={"num_warps": num_warps}
        )
        assert "cubin" in compiled.asm, "no cubin"
        # The specialisation reached the compiler (an attrs format it does not read would be dropped).
        found = compiled.asm["ttir"].count("tt.divisibility = 16")
        assert found >= len(attrs), f"{len(attrs)} arguments specialised as divisible by 16, {found} in the TTIR"
        if not profile:
            return None, None
        import compiled_profile

        params = list(signature)
        constants = {params[path[0]]: value for path, value in constexprs.items()}
        return None, compiled_profile.profile(compiled.asm["cubin"], num_warps, _elements_per_iteration(constants),
                                              compiled.metadata.shared)
    except Exception as error:  # report every failing configuration, not just the first
        return "".join(traceback.format_exception_only(error))[-3000:], None


MAX_JOBS = 8  # each process imports torch and Triton: bounded memory on a many-core machine
CRASHED = "the compiler's process died (a crash, not an exception)"


def _pool(jobs):
    # Fresh interpreters (spawn): the kernels' modules are imported anew, not forked mid-state.
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def compile_all(configs: list, jobs: int, profile: bool = False) -> list:
    """compile_one of each configuration, ``jobs`` processes at a time: (error, profile) each. A compiler that
    kills its process (Triton 3.6 crashed on these kernels) breaks the pool: the first
    unfinished configurations (those that were running) are then compiled one process
    each, so the crash is pinned on its configuration, and the rest go on in a new pool."""
    results = [(None, None)] * len(configs)
    pending = list(range(len(configs)))
    while pending:
        with _pool(jobs) as pool:
            futures = [(i, pool.submit(compile_one, configs[i], profile)) for i in pending]
            unfinished = []
            for i, future in futures:
                try:
                    results[i] = future.result()
                except BrokenProcessPool:
                    unfinished.append(i)
        suspects, pending = unfinished[: jobs + 1], unfinished[jobs + 1 :]
        for i in suspects:
            with _pool(1) as pool:
                try:
                    results[i] = pool.submit(compile_one, configs[i], profile).result()
                except BrokenProcessPool:
                    results[i] = CRASHED, None
    return results


def _named(config, calls: list[str], compiled: dict) -> dict:
    module, name, signature, constexprs, attrs, num_warps = config
    params = list(signature)
    return {"kernel": f"{module}.{name}", "calls": calls,
            "signature": {p: t for p, t in signature.items() if t != "constexpr"},
            "constexprs": {params[path[0]]: str(value) for path, value in constexprs.items()},
            "divisible_by_16": [params[path[0]] for path in attrs], **compiled}


def main(path: str, summary_path: str | None = None, profile_path: str | None = None) -> int:
    """profile_path: also write each configuration's compiled profile there (JSON)."""
    start = time.monotonic()
    launches = json.load(open(path))
    configs, kinds, calls = configurations(launches)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = int(os.environ.get("FUSEDLOSS_AOT_JOBS", 0)) or min(cpus, MAX_JOBS)
    keys = sorted(configs)
    results = compile_all([configs[key] for key in keys], jobs, profile=profile_path is not None)
    failures = 0
    for key, (error, _) in zip(keys, results):
        if error is not None:
            failures += 1
            print(f"FAILED {describe(configs[key])}\n    {error.strip()}".replace("\n", "\n    "))
    kernels = {}
    for module, name, *_ in configs.values():
        kernels[f"{module}.{name}"] = kernels.get(f"{module}.{name}", 0) + 1
    summary = {"triton": triton.__version__, "launches": len(launches), "compiled": len(configs), "failed": failures,
               "per_kernel": kernels, "specialisations": {kind: len(found) for kind, found in kinds.items()},
               "seconds": round(time.monotonic() - start, 1)}
    print(
        f"compiled {len(configs)} configurations for sm_{TARGET.arch}: {failures} failed "
        f"(triton {triton.__version__}) in {summary['seconds']} s with {jobs} jobs"
    )
    print(json.dumps(summary, sort_keys=True))
    if summary_path:
        with open(summary_path, "w") as f:
            json.dump(summary, f)
    if profile_path:
        with open(profile_path, "w") as f:
            compiled = [(key, profile) for key, (_, profile) in zip(keys, results) if profile]
            json.dump([_named(configs[key], calls[key], profile) for key, profile in compiled], f)
    return 1 if failures else 0


def triton_trees() -> list[str | None]:
    """Each folder in FUSEDLOSS_AOT_TRITON_PATHS (os.pathsep separated, made by `pip install
    --target DIR triton==X`): the Makefile gives the GPU machine's version, whose compiler
    differs (3.6 rejects what 3.8 compiles); without any, the installed Triton (None)."""
    listed = [p for p in os.environ.get("FUSEDLOSS_AOT_TRITON_PATHS", "").split(os.pathsep) if p]
    return listed or [None]


def tree_version(tree: str) -> str:
    (dist_info,) = Path(tree).glob("triton-*.dist-info")  # the tree must hold one Triton
    return dist_info.name[len("triton-") : -len(".dist-info")]


def run_compile(launches_path, tree: str | None, workdir, profile: bool = False):
    """Run this script on recorded launches in a fresh process: without the interpreter, with the
    Triton in ``tree`` (None: the installed one) ahead of the fusedloss that this process imported.
    Returns (the finished process, its summary or None, its profiles or None)."""
    import fusedloss

    workdir = Path(workdir)
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(workdir / "triton-cache")
    paths = [tree, str(Path(fusedloss.__file__).resolve().parents[1]), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    summary_path, profile_path = workdir / "summary.json", workdir / "profile.json"
    command = [sys.executable, __file__, str(launches_path), str(summary_path)]
    result = subprocess.run(command + (["--profile", str(profile_path)] if profile else []), env=env,
                            capture_output=True, text=True, timeout=1800)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    profiles = json.loads(profile_path.read_text()) if profile and profile_path.exists() else None
    return result, summary, profiles


if __name__ == "__main__":
    arguments = sys.argv[1:]
    profile_path = None
    if "--profile" in arguments:
        at = arguments.index("--profile")
        profile_path = arguments[at + 1]
        del arguments[at : at + 2]
    sys.exit(main(*arguments, profile_path=profile_path))
