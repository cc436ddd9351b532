"""Compile recorded Triton kernel launches for a real GPU, ahead of time and
without one (Triton's own compiler and ptxas, target sm_90):

    python tests/triton_aot.py LAUNCHES.json [SUMMARY.json]

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
summary to SUMMARY.json if given, and exits 1 if any configuration failed.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures.process import BrokenProcessPool

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend

TARGET = GPUTarget("cuda", 90, 32)
STREAMING_KERNELS = ("_stats_kernel", "_backward_kernel", "_focal_map_kernel")
CUDA_MAX_BLOCK = 2048  # binary_triton.LaunchPlan on CUDA
CUDA_SOFTMAX_TILE = 4096  # multiclass_triton.LaunchPlan on CUDA
CUDA_NUM_WARPS = 8
# (GROUP_BLOCK, PART_BLOCK) a finalize gets on an H100/H200-sized grid (about 8 x 132 parts):
# Triton 3.6 crashed compiling the finalize kernels for shapes like these.
GPU_FINALIZE_BLOCKS = ((1, 1024), (4, 1024), (128, 2))
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
    CUDA launch passes them: streaming kernels' block sizes and num_warps from the
    CUDA plans; finalize launches once more per GPU_FINALIZE_BLOCKS."""
    names = [name for name, *_ in launch["args"]]
    values = [_argument(kind, value) for _, _, kind, value in launch["args"]]
    streaming = launch["name"] in STREAMING_KERNELS
    if streaming:
        for i, name in enumerate(names):
            if name == "BLOCK":
                values[i] = max(16, min(CUDA_MAX_BLOCK, values[i]))
            elif name == "BLOCK_S":
                values[i] = max(1, min(CUDA_SOFTMAX_TILE // values[names.index("BLOCK_C")], values[i]))
    num_warps = CUDA_NUM_WARPS if streaming else launch["num_warps"]
    yield values, num_warps
    if launch["name"] == "_finalize_kernel":
        for group_block, part_block in GPU_FINALIZE_BLOCKS:
            blocks = {"GROUP_BLOCK": group_block, "PART_BLOCK": part_block}
            yield [blocks.get(name, value) for name, value in zip(names, values)], num_warps


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
    num_warps)}, and the keys of those with each kind of GPU specialisation (SPECIALISATIONS)."""
    unique, kinds = {}, {kind: set() for kind in SPECIALISATIONS}
    for launch in launches:
        kernel = getattr(importlib.import_module(launch["module"]), launch["name"])
        for values, num_warps in gpu_arguments(launch):
            signature, constexprs, attrs = specialise(kernel, values, num_warps)
            key = _key(launch, signature, constexprs, attrs, num_warps)
            unique.setdefault(key, (launch["module"], launch["name"], signature, constexprs, attrs, num_warps))
            types = list(signature.values())
            for kind, test in SPECIALISATIONS.items():
                if test(kernel, types, constexprs, attrs):
                    kinds[kind].add(key)
    return unique, kinds


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


def compile_one(config) -> str | None:
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
    except Exception as error:  # report every failing configuration, not just the first
        return "".join(traceback.format_exception_only(error))[-3000:]
    return None


MAX_JOBS = 8  # each process imports torch and Triton: bounded memory on a many-core machine
CRASHED = "the compiler's process died (a crash, not an exception)"


def _pool(jobs):
    # Fresh interpreters (spawn): the kernels' modules are imported anew, not forked mid-state.
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def compile_all(configs: list, jobs: int) -> list:
    """compile_one of each configuration, ``jobs`` processes at a time. A compiler that
    kills its process (Triton 3.6 crashed on these kernels) breaks the pool: the first
    unfinished configurations (those that were running) are then compiled one process
    each, so the crash is pinned on its configuration, and the rest go on in a new pool."""
    errors = [None] * len(configs)
    pending = list(range(len(configs)))
    while pending:
        with _pool(jobs) as pool:
            futures = [(i, pool.submit(compile_one, configs[i])) for i in pending]
            unfinished = []
            for i, future in futures:
                try:
                    errors[i] = future.result()
                except BrokenProcessPool:
                    unfinished.append(i)
        suspects, pending = unfinished[: jobs + 1], unfinished[jobs + 1 :]
        for i in suspects:
            with _pool(1) as pool:
                try:
                    errors[i] = pool.submit(compile_one, configs[i]).result()
                except BrokenProcessPool:
                    errors[i] = CRASHED
    return errors


def main(path: str, summary_path: str | None = None) -> int:
    start = time.monotonic()
    launches = json.load(open(path))
    configs, kinds = configurations(launches)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = int(os.environ.get("FUSEDLOSS_AOT_JOBS", 0)) or min(cpus, MAX_JOBS)
    keys = sorted(configs)
    errors = compile_all([configs[key] for key in keys], jobs)
    failures = 0
    for key, error in zip(keys, errors):
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
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
