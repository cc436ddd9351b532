"""What a compiled Triton kernel costs on sm_90, read from its cubin without a GPU:
resources (registers, spills, shared memory) and the CTAs per SM they allow, and its
main loop's SASS (instructions per element, the width of its global loads and stores).

Used in the ahead-of-time compile process (tests/triton_aot.py --profile), where the
running Triton has compiled the kernel; the CUDA tools come with Triton's NVIDIA backend.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from collections import Counter

# sm_90 (H100/H200): per-SM limits from the CUDA occupancy calculator's table.
REGISTERS_PER_SM = 65536
REGISTER_ALLOCATION_UNIT = 256  # registers, per warp
MAX_WARPS_PER_SM = 64
MAX_CTAS_PER_SM = 32
SHARED_PER_SM = 233472  # 228 KiB
SHARED_RESERVED_PER_CTA = 1024

_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_.]*)")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\b.*`\((\.L_x_\d+)\)")
# LDGSTS: a pipelined loop's asynchronous copy from global to shared memory (cp.async).
_GLOBAL_MEMORY = re.compile(
    r"^(LDGSTS|LDG|STG)\.E(?:\.(?:BYPASS|ZFILL|EL|EF|LU|STRONG\.\w+|CONSTANT|U8|S8|U16|S16|64|128))*")
_RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def ctas_per_sm(registers: int, shared: int, num_warps: int) -> int:
    """CTAs of ``num_warps`` warps one sm_90 SM holds at once, by registers, shared memory and warps."""
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT
    by_registers = (REGISTERS_PER_SM // per_warp) // num_warps
    by_shared = SHARED_PER_SM // (shared + SHARED_RESERVED_PER_CTA)
    return min(MAX_CTAS_PER_SM, MAX_WARPS_PER_SM // num_warps, by_registers, by_shared)


def parse_sass(sass: str) -> tuple[list[tuple[str, str | None]], dict[str, int]]:
    """(opcode, branch target) per instruction, and each label's instruction index."""
    instructions, labels = [], {}
    for line in sass.splitlines():
        if match := _LABEL.match(line):
            labels[match.group(1)] = len(instructions)
        elif match := _INSTRUCTION.search(line):
            branch = _BRANCH.search(line)
            instructions.append((match.group(1), branch.group(1) if branch else None))
    return instructions, labels


def main_loop(instructions, labels) -> tuple[int, int] | None:
    """[first, last] instruction of the kernel's main loop: the widest backward branch's span that
    loads from global memory (a loop nested in it lies inside); None for a kernel without one."""
    spans = [(labels[target], i) for i, (_, target) in enumerate(instructions)
             if target is not None and labels.get(target, len(instructions)) <= i]
    streaming = [(first, last) for first, last in spans
                 if any(op.startswith("LDG") for op, _ in instructions[first : last + 1])]
    return max(streaming, key=lambda span: span[1] - span[0], default=None)


def global_accesses(opcodes) -> dict[str, int]:
    """Global loads and stores by width: {'LDG.128': 2, 'LDG.64': 1, 'STG.128': 1, 'LDGSTS.128': 1};
    width 32 unmarked."""
    counts = Counter()
    for opcode in opcodes:
        if match := _GLOBAL_MEMORY.match(opcode):
            width = next((w for w in ("128", "64", "U16", "S16", "U8", "S8") if f".{w}" in opcode), "32")
            counts[f"{match.group(1)}.{width.lower().lstrip('us')}"] += 1
    return dict(sorted(counts.items()))


def profile(cubin: bytes, num_warps: int, elements_per_iteration: int | None, dynamic_shared: int = 0) -> dict:
    """Resources, occupancy and main-loop SASS of one compiled kernel. dynamic_shared: the bytes
    Triton asks for at launch (its metadata's ``shared``: reductions, layout conversions and the
    pipelined loop's buffers), which the cubin's static figure leaves out. elements_per_iteration:
    elements one program handles per trip of its main loop (or in all, without a loop), for the
    instructions per element (warp instructions per element a thread handles); None: not reported.
    Spills: Triton kernels keep no local arrays, so a stack or local frame is spilled registers."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True)
        sass = subprocess.run([_tool("nvdisasm"), "-c", path], capture_output=True, text=True, check=True).stdout
    registers, stack, static_shared, local = (int(v) for v in _RESOURCES.search(usage.stdout).groups())
    shared = static_shared + dynamic_shared
    instructions, labels = parse_sass(sass)
    loop = main_loop(instructions, labels)
    # Without a loop, the whole kernel (its padding NOPs aside) handles the elements.
    body = [op for op, _ in (instructions[loop[0] : loop[1] + 1] if loop else instructions) if op != "NOP"]
    result = {"registers": registers, "stack": stack, "shared": shared, "local": local,
              "spills": stack > 0 or local > 0, "num_warps": num_warps,
              "ctas_per_sm": ctas_per_sm(registers, shared, num_warps), "loop": loop is not None,
              "loop_instructions": len(body), "global_accesses": global_accesses(body)}
    if elements_per_iteration:
        per_thread = elements_per_iteration / (32 * num_warps)
        result["instructions_per_element"] = round(len(body) / per_thread, 2)
    return result
