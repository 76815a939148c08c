#!/usr/bin/env bash
# `bench gpu` on a GPU machine without network, in one go: unpack the bundle that
# `python -m bench.gpu.pack` made, check the machine in its first seconds, then run the
# benchmark under a time limit. See bench/README.md, "The model server on a GPU".
#
#   bench/gpu/run-on-gpu-machine.sh [BUNDLE [RESULTS]]
#
# BUNDLE: the folder pack wrote (default bench/gpu/bundle); RESULTS: where the results and
# this script's log go (default bench/results). Environment:
#   PYTHON          the machine's Python, with numpy (default python3)
#   DEVICE          cuda (default) or cpu
#   BENCH_TIMEOUT   seconds the benchmark may take (default 420), so there is time to rerun
#   BENCH_ARGS      more options for `bench gpu` (e.g. "--batch-sizes 1,8,32 --no-words")
#   CHECK_ONLY=1    stop after the check
#   PROFILE=1       after the check, profile the batched decoding instead (bench.gpu.profile;
#                   BENCH_ARGS are its options then)
#   STANDINS        stand-ins to use even where the real module exists (e.g. "av"): tests
#
# CTranslate2's wheel loads cuBLAS 12 by name (libcublas.so.12) when it first needs it.
# Where only cuBLAS 13 is installed (as with torch's nvidia-cublas package for CUDA 13),
# a folder on LD_LIBRARY_PATH holds a libcublas.so.12 link to it, next to its own lib
# folder: CTranslate2 looks up only functions that cuBLAS 13 still exports. Use float16
# there (int8 is reported to crash with cuBLAS 13).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$(cd "${1:-$ROOT/bench/gpu/bundle}" && pwd)
RESULTS=${2:-$ROOT/bench/results}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-420}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
LOG="$RESULTS/run-on-gpu-machine-$(date -u +%Y-%m-%d-%H%M%S).log"
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
say() { echo "[$(( $(date +%s) - START )) s] $*"; }
fail() { say "FAILED: $*"; exit 1; }

say "machine: $(uname -srm), $(nproc) cores; python: $($PYTHON --version 2>&1)"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
    nvidia-smi | sed -n 3p
else
    say "no nvidia-smi"
fi
[ -f "$BUNDLE/MANIFEST.json" ] || fail "no bundle in $BUNDLE (python -m bench.gpu.pack)"
say "bundle: $(tr -d '\n ' < "$BUNDLE/MANIFEST.json" | grep -o '"commit":[^,]*,"python_version":[^,]*' || true)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-gpu-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/site" "$WORK/model" "$WORK/stubs" "$WORK/cublas"
for part in site workload model; do
    archive="$BUNDLE/$part.tar.xz"
    case $part in site) into=$WORK/site ;; model) into=$WORK/model ;; *) into=$WORK ;; esac
    if [ -f "$archive" ]; then
        tar -xJf "$archive" -C "$into" || fail "unpacking $archive"
    elif [ "$part" != site ]; then
        fail "$archive is missing"
    fi
done
MODEL_DIR=$(find "$WORK/model" -mindepth 1 -maxdepth 1 -type d | head -1)
say "unpacked: model $(basename "$MODEL_DIR"), $(du -sh "$WORK" | cut -f1) in all"

# cuBLAS 12 for CTranslate2: the machine's own, or a link to cuBLAS 13.
if [ "$DEVICE" = cuda ]; then
    found=$($PYTHON - <<'PY'
import glob, os, site, sys
roots = [*sys.path, *site.getsitepackages()]
for name in ("libcublas.so.12", "libcublas.so.13"):
    for root in roots:
        hits = sorted(glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True))
        if hits:
            print(name, hits[0])
            raise SystemExit
PY
)
    if ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.12 '; then
        say "cuBLAS 12: from the system (ldconfig)"
    elif [ "${found%% *}" = libcublas.so.12 ]; then
        export LD_LIBRARY_PATH="$(dirname "${found#* }"):${LD_LIBRARY_PATH:-}"
        say "cuBLAS 12: ${found#* }"
    elif [ "${found%% *}" = libcublas.so.13 ]; then
        ln -s "${found#* }" "$WORK/cublas/libcublas.so.12"
        export LD_LIBRARY_PATH="$WORK/cublas:$(dirname "${found#* }"):${LD_LIBRARY_PATH:-}"
        say "cuBLAS 12 missing: libcublas.so.12 -> ${found#* } (cuBLAS 13)"
    else
        say "no cuBLAS found in the Python packages (nvidia/*); CTranslate2 will look on its own"
    fi
    export CUDA_CACHE_MAXSIZE=4294967296  # keep the compiled kernels for the next process
fi

# Stand-ins for modules the machine lacks (bench/gpu/stubs/README.md).
for module in av asyncpg sqlalchemy; do
    if [[ " ${STANDINS:-} " == *" $module "* ]] || ! PYTHONPATH="$WORK/site" $PYTHON -c "import $module" 2>/dev/null; then
        ln -s "$ROOT/bench/gpu/stubs/$module" "$WORK/stubs/$module"
        say "stand-in for $module"
    fi
done
export PYTHONPATH="$WORK/stubs:$WORK/site:$ROOT:$ROOT/shared:$ROOT/services/model-server${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
$PYTHON -c "import numpy" 2>/dev/null || fail "$PYTHON has no numpy (the bundle does not carry it)"

say "check"
cd "$ROOT"
$PYTHON -m bench.gpu.check --device "$DEVICE" --model-dir "$MODEL_DIR" \
    --workload "$WORK/workload.npz" || fail "the check (above)"
[ "${CHECK_ONLY:-0}" = 1 ] && { say "check only: done"; exit 0; }
# The benchmark, or with PROFILE=1 the profile of the batched decoding: the same options.
run=(-m bench gpu)
[ "${PROFILE:-0}" = 1 ] && run=(-m bench.gpu.profile)
say "${run[*]:1} (at most $BENCH_TIMEOUT s)"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout --kill-after=20 "$BENCH_TIMEOUT" $PYTHON "${run[@]}" --device "$DEVICE" \
    --model-dir "$MODEL_DIR" --workload "$WORK/workload.npz" --out "$RESULTS" ${BENCH_ARGS:-}
code=$?
say "${run[*]:1}: exit $code; results and this log in $RESULTS"
exit $code
