"""Compile recorded Triton kernel launches for a real GPU, ahead of time and
without one (Triton's own compiler and ptxas, target sm_90):

    python tests/triton_aot.py LAUNCHES.json

LAUNCHES.json: a list of launches as tests/test_triton_compiles.py records them
under the interpreter. Block sizes are set to what the CUDA plans choose (the
interpreter's plans use larger tiles), and each finalize launch is compiled
again with the partial-block shapes of a large GPU grid. Must run without
TRITON_INTERPRET (the kernels must be JIT functions, not interpreted ones).
Prints one line per failure and exits 1 if any configuration failed to compile.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import mangle_type

TARGET = GPUTarget("cuda", 90, 32)
STREAMING_KERNELS = ("_stats_kernel", "_backward_kernel", "_focal_map_kernel")
CUDA_MAX_BLOCK = 2048  # sigmoid_triton._Plan on CUDA
CUDA_SOFTMAX_TILE = 4096  # softmax_triton._Plan on CUDA
CUDA_NUM_WARPS = 8
# (GROUP_BLOCK, PART_BLOCK) a finalize gets on an H100/H200-sized grid (about 8 x 132 parts):
# Triton 3.6 crashed compiling the finalize kernels for shapes like these.
GPU_FINALIZE_BLOCKS = ((1, 1024), (4, 1024), (128, 2))
_DTYPES = {str(getattr(torch, name)): getattr(torch, name)
           for name in ("float32", "float64", "float16", "bfloat16", "uint8", "int16", "int32", "int64", "bool")}
_TL_DTYPES = {str(getattr(tl, name)): getattr(tl, name) for name in ("float32", "float64")}


def configurations(launch: dict):
    """(signature, constexprs, num_warps) to compile for one recorded launch."""
    signature, constexprs = {}, {}
    values = {name: value for name, _, _, value in launch["args"]}
    streaming = launch["name"] in STREAMING_KERNELS
    for name, is_constexpr, kind, value in launch["args"]:
        if is_constexpr:
            if kind == "dtype":
                value = _TL_DTYPES[value]
            elif streaming and name == "BLOCK":
                value = max(16, min(CUDA_MAX_BLOCK, value))
            elif streaming and name == "BLOCK_S":
                value = max(1, min(CUDA_SOFTMAX_TILE // values["BLOCK_C"], value))
            signature[name], constexprs[name] = "constexpr", value
        elif kind == "tensor":
            signature[name] = mangle_type(torch.empty(1, dtype=_DTYPES[value]), True)
        elif kind in ("int", "bool"):
            signature[name] = mangle_type(value, True)
            if signature[name] == "constexpr":  # Triton specialises an int argument equal to 1
                constexprs[name] = value
        elif kind == "float":
            signature[name] = "fp32"
        else:
            raise ValueError(f"{launch['name']}: argument {name} of unexpected kind {kind}")
    num_warps = CUDA_NUM_WARPS if streaming else launch["num_warps"]
    yield signature, constexprs, num_warps
    if launch["name"] == "_finalize_kernel":
        for group_block, part_block in GPU_FINALIZE_BLOCKS:
            yield signature, {**constexprs, "GROUP_BLOCK": group_block, "PART_BLOCK": part_block}, num_warps


def main(path: str) -> int:
    launches = json.load(open(path))
    seen, failures = set(), 0
    for launch in launches:
        kernel = getattr(importlib.import_module(launch["module"]), launch["name"])
        for signature, constexprs, num_warps in configurations(launch):
            key = json.dumps([launch["module"], launch["name"], signature, {k: str(v) for k, v in constexprs.items()},
                              num_warps], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            try:
                compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=TARGET,
                                          options={"num_warps": num_warps})
                assert "cubin" in compiled.asm
            except Exception:  # report every failing configuration, not just the first
                failures += 1
                print(f"FAILED {launch['module']}.{launch['name']} {constexprs} num_warps={num_warps}")
                traceback.print_exc(limit=1)
    print(f"compiled {len(seen)} configurations for sm_{TARGET.arch}: {failures} failed (triton {triton.__version__})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
