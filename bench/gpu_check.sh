#!/usr/bin/env bash
# One bounded check on a fresh machine with a CUDA GPU (sized for one H200, 16 cores):
# build and install fusedloss from this working tree with its CUDA kernels (no package
# registry needed), record the machine, run the test suite on the GPU, run every fused
# CUDA kernel under compute-sanitizer, profile the kernels, run the quick benchmark.
#
#   bash bench/gpu_check.sh OUTDIR            # OUTDIR defaults to $OUT
#   bash bench/gpu_check.sh --dry-run OUTDIR  # on a machine without a GPU (or GPU_CHECK_DRY_RUN=1)
#
# The whole run stops within GPU_CHECK_TOTAL_LIMIT s (default 420, kill grace included):
# each step gets a limit, min(its MAX, what the total leaves after the RESERVE of every
# later step), so a step that ends early leaves its time to the next ones and a slow one
# cannot take a later step's minimum. A step that times out gets SIGINT (pytest still
# writes its summary and JUnit XML; the benchmark, which stops on SIGTERM, gets that),
# then SIGKILL after a grace; what it leaves behind in its process group is killed.
# A failing step does not stop the later ones; a step that could not run (no GPU, no time
# left) is a FAIL, never a skip. Exit status: 0 when every step passed, else 1.
#
# OUTDIR gets at most 8 files and no folders:
#   steps.txt     the step report (step, PASS/FAIL, seconds, limit, detail), also on stdout
#   env.txt       date, commit, nvidia-smi, CUDA_HOME, nvcc/gcc/ninja/sanitizer versions, python packages
#   install.log   the extension build (pip install -v), the installed package's backend check and
#                 python -m fusedloss --check
#   tests.log     pytest's output (failures and the short summary)
#   results.json, results.md  the benchmark: fused providers and eager, then torch.compile, merged
#   throughput.png            where matplotlib is installed
#   logs.tar.gz   tests.xml (JUnit), sanitizer warm-up, memcheck, racecheck, kernel profile and
#                 benchmark logs, each benchmark run's own results (rewritten after each step)
#
# Settings (environment): PYTHON (the interpreter with torch; default python3),
# GPU_CHECK_TOTAL_LIMIT, <STEP>_MAX / <STEP>_RESERVE (e.g. TESTS_MAX=200), TEST_WORKERS
# (pytest-xdist processes, default nproc), MAX_JOBS (parallel nvcc, default nproc),
# FUSEDLOSS_CUDA_ARCHS (default: the GPU's compute capability, else 90),
# BENCH_COMPILE_LOSSES (the torch.compile run's losses, default dice,multiclass_dice).
# Dry run: bench/fake_gpu/ goes first on PATH (a fake nvidia-smi), the limits are those of
# a slow CPU machine (the install compiles the CUDA kernels on few cores) and the GPU
# steps report FAIL (no GPU); see bench/README.md.
set -u

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
if [ "${1:-}" = "--dry-run" ]; then
    DRY_RUN=1
    shift
fi
if [ $# -gt 1 ] || { [ $# -eq 0 ] && [ -z "${OUT:-}" ]; }; then
    echo "usage: bash bench/gpu_check.sh [--dry-run] OUTDIR   (OUTDIR defaults to \$OUT)" >&2
    exit 2
fi
OUTDIR=${1:-$OUT}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
SCRIPT_START=$(date +%s)

PYTHON=${PYTHON:-python3}
case "$PYTHON" in
    */*) [ "${PYTHON#/}" = "$PYTHON" ] && PYTHON="$REPO/$PYTHON" ;;  # relative path: from the repo root
    *) PYTHON=$(command -v "$PYTHON" || echo "$PYTHON") ;;
esac

if [ "$DRY_RUN" = 1 ]; then
    export PATH="$REPO/bench/fake_gpu:$PATH"
    : "${GPU_CHECK_TOTAL_LIMIT:=2400}" "${INSTALL_MAX:=1800}"
fi
TOTAL_LIMIT=${GPU_CHECK_TOTAL_LIMIT:-420}
FINAL_RESERVE=15  # merging the benchmark results, the report, the tar

# Steps in order; MAX: most seconds it may take; RESERVE: seconds kept for it while the
# earlier steps run (with FINAL_RESERVE they add up to 340 of the 420 s).
STEP_NAMES=(environment install info tests sanitizer-warmup memcheck racecheck kernel-profile benchmark-fused
            benchmark-compile)
declare -A MAX=([environment]=30 [install]=140 [info]=45 [tests]=170 [sanitizer-warmup]=30 [memcheck]=40
                [racecheck]=40 [kernel-profile]=35 [benchmark-fused]=60 [benchmark-compile]=55)
declare -A RESERVE=([environment]=10 [install]=60 [info]=15 [tests]=75 [sanitizer-warmup]=15 [memcheck]=25
                    [racecheck]=25 [kernel-profile]=15 [benchmark-fused]=40 [benchmark-compile]=45)
for name in "${STEP_NAMES[@]}"; do  # overrides: TESTS_MAX=200, KERNEL_PROFILE_RESERVE=10, ...
    max_var="$(echo "$name" | tr 'a-z-' 'A-Z_')_MAX"
    reserve_var="$(echo "$name" | tr 'a-z-' 'A-Z_')_RESERVE"
    [ -n "${!max_var:-}" ] && MAX[$name]=${!max_var}
    [ -n "${!reserve_var:-}" ] && RESERVE[$name]=${!reserve_var}
done

# --- what every step sees -------------------------------------------------------------------
unset TRITON_INTERPRET FUSEDLOSS_BACKEND  # real kernels on the GPU, backends chosen by the code
export PYTHONUNBUFFERED=1
export FUSEDLOSS_BUILD_CUDA=1               # setup.py: build the CUDA kernels, fail the install if they do not build
export FUSEDLOSS_EXPECT_CUDA_KERNELS=1      # tests/test_cpp_extension.py: every op has a CUDA kernel
export FUSEDLOSS_EXPECT_BACKENDS=${FUSEDLOSS_EXPECT_BACKENDS:-triton,cuda,reference}  # tests: fail at collection without one
export MAX_JOBS=${MAX_JOBS:-$(nproc)}       # parallel nvcc/g++ jobs (ninja) for the extension
TEST_WORKERS=${TEST_WORKERS:-$(nproc)}
BENCH_COMPILE_LOSSES=${BENCH_COMPILE_LOSSES:-dice,multiclass_dice}

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
STEPS_TXT="$OUTDIR/steps.txt"
ENV_TXT="$OUTDIR/env.txt"
INSTALL_LOG="$OUTDIR/install.log"
TESTS_LOG="$OUTDIR/tests.log"
: >"$ENV_TXT"
: >"$INSTALL_LOG"
: >"$TESTS_LOG"

# --- the step report ----------------------------------------------------------------------------
declare -A STATUS=() SECONDS_TAKEN=() LIMIT=() DETAIL=()
for name in "${STEP_NAMES[@]}"; do
    STATUS[$name]=FAIL
    SECONDS_TAKEN[$name]=-
    LIMIT[$name]=-
    DETAIL[$name]="not run: the script stopped before this step"
done
CURRENT=""
CHILD=""

write_report() {
    local name total=$(($(date +%s) - SCRIPT_START)) overall=PASS
    {
        printf '%-18s %-6s %7s %6s  %s\n' step status seconds limit detail
        for name in "${STEP_NAMES[@]}"; do
            [ "${STATUS[$name]}" = PASS ] || overall=FAIL
            printf '%-18s %-6s %7s %6s  %s\n' "$name" "${STATUS[$name]}" "${SECONDS_TAKEN[$name]}" \
                "${LIMIT[$name]}" "${DETAIL[$name]}"
        done
        printf '%-18s %-6s %7s %6s  %s\n' total "$overall" "$total" "$TOTAL_LIMIT" \
            "$([ "$DRY_RUN" = 1 ] && echo "DRY RUN (fake nvidia-smi) on $(uname -n)" || uname -n)"
    } >"$STEPS_TXT"
}

bundle_logs() {
    tar -czf "$OUTDIR/logs.tar.gz.part" -C "$LOGS" . 2>/dev/null && mv -f "$OUTDIR/logs.tar.gz.part" "$OUTDIR/logs.tar.gz"
    rm -f "$OUTDIR/logs.tar.gz.part"
}

# begin_step NAME: sets STEP_START, STEP_END (this step's deadline) and LIMIT[NAME].
# Returns 1 (and records a FAIL) when fewer than 5 s are left for it.
begin_step() {
    local name=$1 later=0 after=0 now left limit
    for other in "${STEP_NAMES[@]}"; do
        [ "$after" = 1 ] && later=$((later + RESERVE[$other]))
        [ "$other" = "$name" ] && after=1
    done
    now=$(date +%s)
    left=$((SCRIPT_START + TOTAL_LIMIT - FINAL_RESERVE - later - now))
    limit=$((MAX[$name] < left ? MAX[$name] : left))
    CURRENT=$name
    STEP_START=$now
    STEP_END=$((now + limit))
    LIMIT[$name]=$limit
    DETAIL[$name]="interrupted: the script was stopped during this step"
    echo "=== $name (limit ${limit} s) ==="
    if [ "$limit" -lt 5 ]; then
        finish_step "$name" 1 "not run: no time left (${limit} s)"
        return 1
    fi
    write_report
    return 0
}

# finish_step NAME EXIT_STATUS DETAIL
finish_step() {
    STATUS[$1]=$([ "$2" -eq 0 ] && echo PASS || echo FAIL)
    SECONDS_TAKEN[$1]=$(($(date +%s) - STEP_START))
    DETAIL[$1]=$3
    CURRENT=""
    write_report
    bundle_logs
    echo "--- $1: ${STATUS[$1]} after ${SECONDS_TAKEN[$1]} s: $3"
}

# bounded SIGNAL GRACE CAP LOG COMMAND...: run COMMAND (stdin /dev/null, output appended to
# LOG) under `timeout`: SIGNAL after min(CAP, what is left of the step minus GRACE) s,
# SIGKILL GRACE s later; then kill whatever it left in its process group. Sets $rc
# (124: timed out, like 137 after the SIGKILL).
bounded() {
    local sig=$1 grace=$2 cap=$3 log=$4 left limit shown
    shift 4
    shown="$*"
    shown=${shown//$'\n'/ }
    [ "${#shown}" -gt 160 ] && shown="${shown:0:160} ..."
    left=$((STEP_END - $(date +%s) - grace))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 1 ]; then
        echo "--- not run, no time left in the step: $shown" >>"$log"
        rc=124
        return
    fi
    echo "--- $(date -u +%H:%M:%S) (limit ${limit} s, then $sig) $shown" >>"$log"
    # In the background: `wait` returns at once when this script gets a signal (trap below).
    timeout -s "$sig" -k "$grace" "$limit" "$@" >>"$log" 2>&1 </dev/null &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    kill -KILL -- "-$CHILD" 2>/dev/null  # timeout leads its own process group: leftovers
    CHILD=""
    echo "--- exit $rc$( [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo ' (timed out)')" >>"$log"
}

timed_out() { [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; }

on_signal() {
    trap - INT TERM
    [ -n "$CHILD" ] && kill -KILL -- "-$CHILD" 2>/dev/null
    [ -n "$CURRENT" ] && finish_step "$CURRENT" 1 "interrupted: the script got a signal during this step"
    write_report
    bundle_logs
    cat "$STEPS_TXT"
    rm -rf "$LOGS"
    exit 1
}
trap on_signal INT TERM
write_report

GPU=unknown  # 1 when torch sees a CUDA device, set by the environment step

# --- 1. environment ---------------------------------------------------------------------------
find_cuda_home() {
    # A CUDA_HOME has bin/nvcc and the runtime headers. From: $CUDA_HOME, $CUDA_PATH, the
    # nvcc on PATH (symlinks resolved; a wrapper script asked where it runs from), the usual places.
    local candidates=("${CUDA_HOME:-}" "${CUDA_PATH:-}") nvcc top probe
    nvcc=$(command -v nvcc 2>/dev/null)
    if [ -n "$nvcc" ]; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")")
        probe=$(mktemp --suffix=.cu)
        top=$(timeout 10 "$nvcc" --dryrun -c "$probe" -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
        rm -f "$probe"
        [ -n "$top" ] && candidates+=("$(readlink -f "$top/..")")
    fi
    candidates+=(/usr/local/cuda $(ls -d /usr/local/cuda-* 2>/dev/null | sort -Vr) /opt/cuda /usr)
    for dir in "${candidates[@]}"; do
        [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ] || continue
        if [ -e "$dir/include/cuda_runtime.h" ] || compgen -G "$dir/targets/*/include/cuda_runtime.h" >/dev/null; then
            readlink -f "$dir"
            return 0
        fi
    done
    return 1
}

ENV_PY='
import importlib, os, platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "cuda available", torch.cuda.is_available())
caps = []
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        caps.append(f"{props.major}{props.minor}")
        print(f"device {index}", props.name, "capability", f"{props.major}.{props.minor}", "multiprocessors",
              props.multi_processor_count, "memory GiB", round(props.total_memory / 2**30, 1))
for name in ("triton", "numpy", "pytest", "xdist", "pytest_benchmark", "hypothesis", "ninja", "matplotlib",
             "setuptools", "pip"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError:
        print(name, "missing")
with open(os.path.join(sys.argv[1], "gpu"), "w") as out:
    out.write(("1 " + ",".join(sorted(set(caps)))) if caps else "0")
'

if begin_step environment; then
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(hostname); $(nproc) cores; $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB memory"}')"
        echo "repo: $REPO"
        if git rev-parse HEAD >/dev/null 2>&1; then
            echo "commit: $(git rev-parse HEAD); $(git status --porcelain 2>/dev/null | wc -l) uncommitted path(s)"
        else
            echo "commit: no git repository here"
        fi
        [ "$DRY_RUN" = 1 ] && echo "DRY RUN: fake nvidia-smi from $REPO/bench/fake_gpu"
        echo "PYTHON=$PYTHON"
        echo "MAX_JOBS=$MAX_JOBS TEST_WORKERS=$TEST_WORKERS FUSEDLOSS_EXPECT_BACKENDS=$FUSEDLOSS_EXPECT_BACKENDS"
    } >>"$ENV_TXT"
    env_status=0
    if CUDA_HOME=$(find_cuda_home); then
        export CUDA_HOME
        export PATH="$CUDA_HOME/bin:$PATH"
        [ "$DRY_RUN" = 1 ] && export PATH="$REPO/bench/fake_gpu:$PATH"
        echo "CUDA_HOME=$CUDA_HOME" >>"$ENV_TXT"
    else
        unset CUDA_HOME
        echo "CUDA_HOME: not found (no nvcc with CUDA headers on PATH, in \$CUDA_HOME or /usr/local/cuda*)" >>"$ENV_TXT"
        env_status=1
    fi
    bounded KILL 1 15 "$ENV_TXT" nvidia-smi
    smi_status=$rc
    bounded KILL 1 10 "$ENV_TXT" nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
    bounded KILL 1 10 "$ENV_TXT" nvcc --version
    nvcc_status=$rc
    bounded KILL 1 5 "$ENV_TXT" gcc --version
    gcc_status=$rc
    bounded KILL 1 5 "$ENV_TXT" ninja --version
    bounded KILL 1 10 "$ENV_TXT" compute-sanitizer --version
    bounded INT 2 30 "$ENV_TXT" "$PYTHON" -c "$ENV_PY" "$LOGS"
    py_status=$rc
    gpu_line=$(cat "$LOGS/gpu" 2>/dev/null || echo unknown)
    GPU=${gpu_line%% *}
    caps=$( [ "$GPU" = 1 ] && echo "${gpu_line#* }")
    if [ -z "$caps" ]; then  # no device for torch: what nvidia-smi says (the fake one in a dry run)
        caps=$(timeout 10 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' .' | sort -u | paste -sd, -)
    fi
    export FUSEDLOSS_CUDA_ARCHS=${FUSEDLOSS_CUDA_ARCHS:-${caps:-90}}
    echo "FUSEDLOSS_CUDA_ARCHS=$FUSEDLOSS_CUDA_ARCHS (the extension's GPU code is built for these only)" >>"$ENV_TXT"
    device=$(sed -n 's/^device 0 \(.*\) capability \([0-9.]*\).*/\1 (sm \2)/p' "$ENV_TXT" | head -n 1)
    versions=$(awk '$1 == "torch" || $1 == "triton" {printf "%s %s, ", $1, $2}' "$ENV_TXT")
    detail="${device:-torch sees no CUDA GPU}; ${versions}nvcc $(sed -n 's/.*release \([0-9.]*\),.*/\1/p' "$ENV_TXT" | head -n 1), gcc $(gcc -dumpfullversion 2>/dev/null)"
    failed_parts=""
    [ "$smi_status" -ne 0 ] && failed_parts+=" nvidia-smi"
    [ "$nvcc_status" -ne 0 ] && failed_parts+=" nvcc"
    [ "$gcc_status" -ne 0 ] && failed_parts+=" gcc"
    [ "$py_status" -ne 0 ] && failed_parts+=" python/torch"
    [ -z "${CUDA_HOME:-}" ] && failed_parts+=" CUDA_HOME"
    [ -n "$failed_parts" ] && env_status=1 && detail="failed:$failed_parts; $detail"
    finish_step environment "$env_status" "$detail"
fi
cat "$ENV_TXT"

# --- 2. build and install the package, CUDA kernels forced -------------------------------------
CHECK_PY='
import os, sys
import torch
import fusedloss
from fusedloss.ops import cpp_ops
from fusedloss.ops.schema import SCHEMAS
repo = sys.argv[1]
problems = []
print("fusedloss", fusedloss.__version__, "from", fusedloss.__file__)
if not os.path.realpath(fusedloss.__file__).startswith(os.path.realpath(repo) + os.sep):
    problems.append(f"fusedloss imported from {fusedloss.__file__}, not from {repo}")
try:
    import fusedloss._C as extension
    print("extension", extension.__file__)
except ImportError as error:
    problems.append(f"fusedloss._C does not import: {error}")
if cpp_ops._state.get("tried_build"):
    problems.append("the extension was compiled on first use, not installed")
missing_kernels = [name for name in SCHEMAS if not cpp_ops.has_kernel(name, "cuda")]
if missing_kernels:
    problems.append(f"ops without a CUDA kernel: {missing_kernels}")
print("backends", fusedloss.backends())
expected = [name for name in os.environ.get("FUSEDLOSS_EXPECT_BACKENDS", "").split(",") if name]
for family in ("binary", "multiclass"):
    available = fusedloss.available_backends("cuda", family)
    print(f"available_backends(cuda, {family}):", available)
    for name in sorted(set(expected + ["triton", "cuda"]) - set(available)):
        reason = fusedloss.ops.selection.unavailable_reason(name, torch.device("cuda"), family)
        problems.append(f"backend {name} missing for {family} on cuda: {reason}")
for problem in problems:
    print("PROBLEM:", problem)
print("RESULT:", "; ".join(problems) if problems else
      "backends " + ",".join(fusedloss.available_backends("cuda")) + " on cuda, CUDA kernels from the installed extension")
sys.exit(1 if problems else 0)
'

if begin_step install; then
    {
        echo "CUDA_HOME=${CUDA_HOME:-unset} FUSEDLOSS_BUILD_CUDA=$FUSEDLOSS_BUILD_CUDA FUSEDLOSS_CUDA_ARCHS=${FUSEDLOSS_CUDA_ARCHS:-unset} MAX_JOBS=$MAX_JOBS"
        echo "nvcc flags: $("$PYTHON" -c 'import importlib.util as u; s = u.spec_from_file_location("f", "fusedloss/_build_flags.py"); m = u.module_from_spec(s); s.loader.exec_module(m); print(" ".join(m.nvcc()))' 2>&1)"
    } >>"$INSTALL_LOG"
    build_start=$(date +%s)
    # As the Makefile does (no dependencies, this interpreter's torch), verbose; --no-index: no
    # registry. It leaves 35 s of the step to the check below.
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1  # no registry; a system python is fine
    if "$PYTHON" -m pip --version >/dev/null 2>&1; then
        bounded TERM 10 "$((STEP_END - $(date +%s) - 35))" "$INSTALL_LOG" \
            "$PYTHON" -m pip install -v --no-deps --no-build-isolation --no-index -e .
        pip_status=$rc
        how="pip install"
    else
        echo "--- no pip for $PYTHON" >>"$INSTALL_LOG"
        pip_status=1
        how="no pip"
    fi
    if [ "$pip_status" -ne 0 ] && ! timed_out "$pip_status" && ! grep -q 'csrc/cuda/.*\.cu' "$INSTALL_LOG"; then
        # pip failed before compiling anything (no pip, no wheel support, ...): the same
        # setup.py, the extension built in place, the tree imported through PYTHONPATH.
        bounded TERM 10 "$((STEP_END - $(date +%s) - 35))" "$INSTALL_LOG" "$PYTHON" setup.py build_ext --inplace
        pip_status=$rc
        how="$([ "$how" = "no pip" ] && echo "no pip" || echo "pip failed before compiling"): setup.py build_ext --inplace + PYTHONPATH"
        export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    fi
    build_seconds=$(($(date +%s) - build_start))
    detail="$how exit $pip_status after ${build_seconds} s"
    timed_out "$pip_status" && detail="$how timed out after ${build_seconds} s"
    if [ "$pip_status" -ne 0 ]; then
        case ":${PYTHONPATH:-}:" in  # the later steps still import the tree
            *":$REPO:"*) ;;
            *) export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" ;;
        esac
        # An extension left by an earlier run (ignored files stay on a machine between runs)
        # would stand in for the one that did not build: removed (not in a dry run, where
        # the tree may be someone's working copy and no later step runs anyway).
        stale=$(ls fusedloss/_C*.so 2>/dev/null)
        if [ -n "$stale" ] && [ "$DRY_RUN" != 1 ]; then
            rm -f $stale && echo "removed the stale $stale" >>"$INSTALL_LOG"
        fi
        detail="$detail (later steps: PYTHONPATH=$REPO, no extension)"
    fi
    # From outside the tree: what the later steps import.
    bounded INT 3 40 "$INSTALL_LOG" bash -c 'cd / && exec "$@"' check "$PYTHON" -c "$CHECK_PY" "$REPO"
    check_status=$rc
    result=$(sed -n 's/^RESULT: //p' "$INSTALL_LOG" | tail -n 1)
    detail="$detail; ${result:-backend check exit $check_status}"
    # The GPU code in the extension: a cubin for each FUSEDLOSS_CUDA_ARCHS entry.
    so=$(ls fusedloss/_C*.so 2>/dev/null | head -n 1)
    if [ -n "$so" ] && command -v cuobjdump >/dev/null; then
        bounded KILL 1 15 "$LOGS/cuobjdump.txt" cuobjdump --list-elf "$so"
        cat "$LOGS/cuobjdump.txt" >>"$INSTALL_LOG"
        archs=$(grep -v '^--- ' "$LOGS/cuobjdump.txt" | grep -o 'sm_[0-9]*[af]*' | sort -u | paste -sd, -)
        detail="$detail; cubins: ${archs:-none}"
        for arch in ${FUSEDLOSS_CUDA_ARCHS//[,;]/ }; do
            if ! grep -v '^--- ' "$LOGS/cuobjdump.txt" | grep -q "sm_${arch//./}\b"; then
                detail="$detail (no sm_${arch//./} cubin)"
                check_status=1
            fi
        done
    elif [ -n "$so" ]; then
        detail="$detail; cubins not listed (no cuobjdump)"
    fi
    finish_step install "$((pip_status || check_status))" "$detail"
fi
tail -n 12 "$INSTALL_LOG"

# --- 3. what the installed package says of itself: python -m fusedloss --check --------------------
# Versions, backends and a tiny forward + backward of every loss on every backend against
# the reference (exit 1 on a disagreement); its Triton compiles warm the cache for the tests.
if begin_step info; then
    bounded INT 5 "${MAX[info]}" "$LOGS/info.log" bash -c 'cd / && exec "$@"' info "$PYTHON" -m fusedloss --check
    info_status=$rc
    { echo "--- python -m fusedloss --check (exit $info_status)"; cat "$LOGS/info.log"; } >>"$INSTALL_LOG"
    detail=$(grep -E '^(passed|FAILED): ' "$LOGS/info.log" | tail -n 1)
    timed_out "$info_status" && detail="timed out; $detail"
    finish_step info "$info_status" "$(grep -c '^  ok ' "$LOGS/info.log") ok; ${detail:-no result line (exit $info_status)}"
fi

# --- the GPU steps --------------------------------------------------------------------------------
# gpu_step NAME: begin NAME if it can run here; else record why not (a FAIL).
gpu_step() {
    begin_step "$1" || return 1
    if [ "$GPU" != 1 ]; then
        [ "$1" = tests ] && echo "not run: no GPU" >>"$TESTS_LOG"
        finish_step "$1" 1 "not run: no GPU (torch.cuda.is_available() is $([ "$GPU" = 0 ] && echo False || echo unknown))"
        return 1
    fi
    return 0
}

# --- 4. the test suite on the GPU -----------------------------------------------------------------
if gpu_step tests; then
    parallel=(-n "$TEST_WORKERS")
    detail=""
    if ! "$PYTHON" -c "import xdist" 2>/dev/null; then
        parallel=()
        detail="pytest-xdist missing: one process; "
    fi
    # SIGINT at the limit: pytest stops, prints the failures and the summary, writes the XML.
    # Triton and inductor compile on the CPU: one compile thread per test process.
    TORCHINDUCTOR_COMPILE_THREADS=1 bounded INT 15 "${MAX[tests]}" "$TESTS_LOG" \
        "$PYTHON" -m pytest tests "${parallel[@]}" -p no:cacheprovider -q -rfE --durations=20 --maxfail=100 \
        -W ignore::DeprecationWarning --junitxml="$LOGS/tests.xml"
    tests_status=$rc
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|deselected|error|errors|xfailed|xpassed)\b.* in [0-9.]+s|no tests ran' \
        "$TESTS_LOG" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
    timed_out "$tests_status" && detail+="timed out (SIGINT); "
    finish_step tests "$tests_status" "${detail}${summary:-no pytest summary (exit $tests_status)}"
    grep -E '^(FAILED|ERROR) ' "$TESTS_LOG" | head -n 30
fi

# --- 5. compute-sanitizer over every fused CUDA kernel (bench/sanitize_check.py) -------------------
# First the same workload without the sanitizer: Triton compiles its kernels into the cache
# here, not under memcheck's clock. No caching allocator, so that memcheck sees each
# tensor's own bounds (a pooled block would hide an overrun into its neighbour).
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
if gpu_step sanitizer-warmup; then
    bounded INT 5 "${MAX[sanitizer-warmup]}" "$LOGS/sanitizer_warmup.log" "$PYTHON" bench/sanitize_check.py
    ran=$(grep -c ': ok$' "$LOGS/sanitizer_warmup.log")
    checked=$(grep -o 'problem(s); backends .*' "$LOGS/sanitizer_warmup.log" | tail -n 1)
    finish_step sanitizer-warmup "$rc" "$ran call(s) ok; ${checked:-no summary line}; exit $rc$(timed_out "$rc" && echo ' (timed out)')"
fi
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
for tool in memcheck racecheck; do
    if gpu_step "$tool"; then
        log="$LOGS/$tool.log"
        bounded INT 5 "${MAX[$tool]}" "$log" "$SANITIZER" --tool "$tool" --error-exitcode 3 --print-limit 100 \
            "$PYTHON" bench/sanitize_check.py
        summary=$(grep -E '=+ (ERROR|RACECHECK) SUMMARY' "$log" | tail -n 1 | sed -E 's/^=+ //')
        ran=$(grep -c ': ok$' "$log")
        status=$rc
        [ -z "$summary" ] && [ "$status" -eq 0 ] && status=1  # no sanitizer summary: it did not check anything
        finish_step "$tool" "$status" "${summary:-no sanitizer summary}; $ran call(s) ok; exit $rc$(timed_out "$rc" && echo ' (timed out)')"
    fi
done
unset PYTORCH_NO_CUDA_MEMORY_CACHING

# --- 6. kernel by kernel: where a call's time goes ----------------------------------------------
if gpu_step kernel-profile; then
    bounded INT 5 "${MAX[kernel-profile]}" "$LOGS/kernel_profile.log" "$PYTHON" bench/kernel_profile.py
    profiled=$(grep -c ' of kernels per step$' "$LOGS/kernel_profile.log")
    finish_step kernel-profile "$rc" "$profiled (case, backend) profile(s); exit $rc$(timed_out "$rc" && echo ' (timed out)')"
fi

# --- 7. the quick benchmark: fused backends (and eager) first, torch.compile last ---------------
# The benchmark starts no new case after --time-budget s and stops on SIGTERM, writing
# what it measured either way; the budget leaves room for a case in flight.
# bench_run STEP MARGIN PROVIDERS [ARGS...]
bench_run() {
    local name=$1 margin=$2 providers=$3 budget
    shift 3
    budget=$((LIMIT[$name] - margin))
    if [ "$budget" -lt 5 ]; then
        finish_step "$name" 1 "not run: no time for a case (limit ${LIMIT[$name]} s)"
        return
    fi
    bounded TERM 10 "${MAX[$name]}" "$LOGS/$name.log" "$PYTHON" bench/main.py --preset quick --providers "$providers" \
        "$@" --out "$LOGS/$name" --time-budget "$budget"
    local measured families
    measured=$(grep -cE '^\[ *[0-9]+/[0-9]+\] .*: [0-9.e+-]+ ms' "$LOGS/$name.log")
    families=$("$PYTHON" -c '
import json, sys
rows = [row for row in json.load(open(sys.argv[1]))["rows"] if row["status"] == "ok"]
print(", ".join("%d %s" % (sum(row["family"] == family for row in rows), family) for family in ("binary", "multiclass")))
' "$LOGS/$name/results.json" 2>/dev/null)
    finish_step "$name" "$rc" "$measured measurement(s) (${families:-no results.json}) in a ${budget} s budget$(timed_out "$rc" && echo ', timed out')"
}
if gpu_step benchmark-fused; then
    bench_run benchmark-fused 20 fused,eager
fi
if gpu_step benchmark-compile; then
    # Every (loss, dtype) compiles once, a new rank recompiles: a few losses, binary and multi-class.
    bench_run benchmark-compile 30 compile --losses "$BENCH_COMPILE_LOSSES"
fi

# --- the benchmark's results, the report, the logs -------------------------------------------
STEP_END=$(($(date +%s) + FINAL_RESERVE - 3))
inputs=()
for name in benchmark-fused benchmark-compile; do
    [ -f "$LOGS/$name/results.json" ] && inputs+=("$LOGS/$name/results.json")
done
if [ "${#inputs[@]}" -gt 0 ]; then
    bounded KILL 1 10 "$LOGS/merge.log" "$PYTHON" bench/merge_results.py "$OUTDIR" "${inputs[@]}"
fi
CURRENT=""
write_report
bundle_logs
rm -rf "$LOGS"
# At most 8 files, no folders, in OUTDIR.
extra=$(find "$OUTDIR" -mindepth 1 -maxdepth 1 | wc -l)
[ "$extra" -gt 8 ] && echo "warning: $extra entries in $OUTDIR (at most 8 come back)"

echo
echo "=== gpu_check step report: $STEPS_TXT ==="
cat "$STEPS_TXT"
ls -l "$OUTDIR"
grep -q '^total  *PASS' "$STEPS_TXT"
exit $?
