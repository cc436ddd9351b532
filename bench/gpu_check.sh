#!/usr/bin/env bash
# One bounded check on a machine with a CUDA GPU:
#   install fusedloss from this working tree (no package registry needed), record the
#   machine, run the test suite on the GPU, run the quick benchmark.
#
#   bash bench/gpu_check.sh OUTDIR
#
# Writes 8 files into OUTDIR, no subfolders: env.txt (date, commit, nvidia-smi, versions,
# install log), tests.log, sanitizer.log, bench.log (the kernel profile, then the
# benchmark's log), results.json, results.md,
# throughput.png (if matplotlib is there) and steps.txt (each step's exit status and time).
# Every command runs under `timeout`; the limits below add up to at most 555 s. A failing
# step does not stop the later ones; the exit status is 1 if any step failed.
# PYTHON (default python3) picks the interpreter that has torch.
set -u

if [ $# -ne 1 ]; then
    echo "usage: bash bench/gpu_check.sh OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
cd "$REPO" || exit 2

# Limits in seconds; each `timeout -k 5` may add 5 s of grace:
#   environment 10 + 15, install 100 + 20 (it compiles the CUDA extension), tests 180
#   (in parallel with pytest-xdist where it is installed), compute-sanitizer 35 + 35,
#   kernel profile 30, benchmark 85  (+ 9 x 5 grace = 555 s).
# The benchmark starts no new case after BENCH_BUDGET s, so it writes its reports well
# before its own limit (and on SIGTERM it still writes what it has).
NVIDIA_SMI_LIMIT=10
INFO_LIMIT=15
INSTALL_LIMIT=100
IMPORT_LIMIT=20
TESTS_LIMIT=${TESTS_LIMIT:-180}
SANITIZER_LIMIT=${SANITIZER_LIMIT:-35}
BENCH_LIMIT=${BENCH_LIMIT:-85}
BENCH_BUDGET=${BENCH_BUDGET:-65}
PROFILE_LIMIT=${PROFILE_LIMIT:-30}
TEST_WORKERS=${TEST_WORKERS:-12}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}  # parallel nvcc for the extension build

unset TRITON_INTERPRET FUSEDLOSS_BACKEND  # real kernels on the GPU, backends chosen by the code
export PYTHONUNBUFFERED=1
ENV_TXT="$OUT/env.txt"
STEPS="$OUT/steps.txt"
: >"$ENV_TXT"
: >"$STEPS"
failed=0

# record NAME EXIT_STATUS START_SECONDS [DETAIL]
record() {
    local verdict=ok
    if [ "$2" -ne 0 ]; then
        verdict=FAILED
        failed=1
    fi
    if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then
        verdict="FAILED (timed out)"
    fi
    echo "$1: $verdict, exit $2 after $(($(date +%s) - $3)) s${4:+ ($4)}" | tee -a "$STEPS"
}

# Logs go to files, not through a pipe to tee: a process left behind by a killed step
# (e.g. torch.compile's compile workers) would hold the pipe open and hang the script.

# --- 1. the machine ---------------------------------------------------------------------
start=$(date +%s)
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "repo: $REPO"
    if [ -e .git ]; then
        echo "commit: $(git rev-parse HEAD 2>/dev/null || echo none)"
        echo "uncommitted paths: $(git status --porcelain 2>/dev/null | wc -l)"
    else
        echo "commit: no .git here"
    fi
    echo "python: $PYTHON"
    echo
    timeout -k 5 "$NVIDIA_SMI_LIMIT" nvidia-smi
    echo
    timeout -k 5 "$INFO_LIMIT" "$PYTHON" - <<'EOF'
import platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("device", props.name, "capability", f"{props.major}.{props.minor}",
          "multiprocessors", props.multi_processor_count, "memory GiB", round(props.total_memory / 2**30, 1))
for name in ("triton", "numpy", "pytest", "pytest_benchmark", "matplotlib"):
    try:
        print(name, getattr(__import__(name), "__version__", "?"))
    except ImportError:
        print(name, "missing")
EOF
} >>"$ENV_TXT" 2>&1
env_status=$?
cat "$ENV_TXT"
record "environment" "$env_status" "$start"

# --- 2. install from the working tree ---------------------------------------------------
start=$(date +%s)
echo "--- pip install --no-deps --no-build-isolation --no-index -e ." >>"$ENV_TXT"
timeout -k 5 "$INSTALL_LIMIT" "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e . >>"$ENV_TXT" 2>&1
install_status=$?
detail="editable install"
if [ "$install_status" -ne 0 ]; then
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    detail="editable install failed; using PYTHONPATH=$PYTHONPATH"
fi
# From outside the tree, so that this imports what the later steps will import.
echo "--- import check" >>"$ENV_TXT"
(cd / && timeout -k 5 "$IMPORT_LIMIT" "$PYTHON" -c "
import fusedloss
print('fusedloss', fusedloss.__version__, 'from', fusedloss.__file__)
print('backends', fusedloss.backends())") >>"$ENV_TXT" 2>&1
import_status=$?
[ "$import_status" -ne 0 ] && detail="$detail; import failed"
tail -n 3 "$ENV_TXT"
record "install" "$((install_status || import_status))" "$start" "$detail"

# --- 3. the test suite, on the GPU ------------------------------------------------------
start=$(date +%s)
# Triton and inductor compile on the CPU: spread the tests over processes (one GPU
# serves them all), each compiling on one thread.
parallel=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then
    parallel=(-n "$TEST_WORKERS")
fi
TORCHINDUCTOR_COMPILE_THREADS=1 timeout -k 5 "$TESTS_LIMIT" "$PYTHON" -m pytest tests "${parallel[@]}" --maxfail=50 \
    -q -rfEs --durations=15 -W ignore::DeprecationWarning -p no:cacheprovider >"$OUT/tests.log" 2>&1
tests_status=$?
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -n 40
tail -n 3 "$OUT/tests.log"
record "tests" "$tests_status" "$start"

# --- 4. compute-sanitizer over every fused CUDA kernel ----------------------------------
start=$(date +%s)
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
: >"$OUT/sanitizer.log"
sanitizer_status=0
for tool in memcheck racecheck; do
    echo "--- compute-sanitizer --tool $tool" >>"$OUT/sanitizer.log"
    timeout -k 5 "$SANITIZER_LIMIT" "$SANITIZER" --tool "$tool" --error-exitcode 3 \
        "$PYTHON" bench/sanitize_check.py >>"$OUT/sanitizer.log" 2>&1
    status=$?
    echo "--- $tool exit $status" >>"$OUT/sanitizer.log"
    [ "$status" -ne 0 ] && sanitizer_status=$status
done
grep -E "^(--- |=+ ERROR SUMMARY)" "$OUT/sanitizer.log"
record "compute-sanitizer" "$sanitizer_status" "$start"

# --- 5. kernel by kernel: where a call's time goes ----------------------------------------
start=$(date +%s)
timeout -k 5 "$PROFILE_LIMIT" "$PYTHON" bench/kernel_profile.py >"$OUT/bench.log" 2>&1
record "kernel profile" "$?" "$start"

# --- 6. the quick benchmark ---------------------------------------------------------------
start=$(date +%s)
echo "--- bench/main.py --preset quick" >>"$OUT/bench.log"
timeout -k 5 "$BENCH_LIMIT" "$PYTHON" bench/main.py --preset quick --out "$OUT" --time-budget "$BENCH_BUDGET" >>"$OUT/bench.log" 2>&1
bench_status=$?
grep -E "^(note|wrote|[0-9]+ measurement)" "$OUT/bench.log" | tail -n 25
record "benchmark" "$bench_status" "$start"

echo
echo "=== gpu_check summary: $OUT ==="
cat "$STEPS"
ls -l "$OUT"
exit "$failed"
