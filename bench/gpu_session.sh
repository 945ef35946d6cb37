#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one go, without installing the package:
#   bash bench/gpu_session.sh OUTDIR
# Steps (STEPS="warm new host profile gpu tiles acc" by default, "compare" on request; each with its own time
# limit in seconds, cut to what is left of SESSION_T):
#   warm     compile ahead: WARM_GPU processes of `gpu.py --warm-only` and WARM_TILES of
#            `gpu_tiles.py --warm-only`, each launching its share of the rows / tile configs
#            once, all at once, to fill Triton's on-disk cache for the timed steps   (WARM_T)
#   new      bench/gpu.py on the rows of paths no GPU has timed yet (NEW_ROWS), no torch.compile,
#            first, so they are measured whatever happens later                (NEW_T, new.csv)
#   host     bench/gpu.py --host on HOST_ROWS: a plain call's host time per call, and the Python
#            functions that cost it (cProfile)                              (HOST_T, host.log)
#   profile  bench/gpu.py --profile on PROFILE_ROWS: the kernels of each Triton path and of its
#            eager reference, with device time per call (torch.profiler)   (PROFILE_T, profile.log)
#   gpu      bench/gpu.py $GPU_ARGS: every Triton kernel checked and timed   (GPU_T, gpu.csv)
#            (torch.compile off by default: its column was measured on 2026-11-27)
#   acc      bench/gpu_accuracy.py $ACC_ARGS: Hebbian MNIST accuracy, fp32 vs tf32 (ACC_T, acc.csv)
#            (hebbian-wta and hebbian-pca: softhebb's was measured on the H200 on 2026-11-27)
#   tiles    bench/gpu_tiles.py $TILES_ARGS: tile-size sweep of the GEMM kernels (TILES_T, tiles.csv)
#   compare  bpalts-compare --preset quick --device cuda $CMP_ARGS: every learner runs (or those
#            of --methods ...)                                            (CMP_T, compare/)
# The package is put on PYTHONPATH from a copy of bpalts/ with kernels/ as bpalts/kernels (the
# C++ extension is not needed). MNIST: $BPALTS_DATA if set, else gzipped IDX files in .mnist/
# (the four *-ubyte.gz; `gzip -c ~/.cache/bpalts/MNIST/raw/F > .mnist/F.gz`), unpacked to /tmp.
# Every step writes its CSV as it goes, so a step cut off by its limit keeps what it measured.
# The logs and CSVs are written to a work folder and packed into OUTDIR/gpu_session.tgz after
# every step (the device tool brings back at most 8 files; `tar xzf` it), with the suggested
# switches also in OUTDIR/decide.txt.
# The whole script stays within SESSION_T seconds (default 570), so that it fits in one device
# call (at most 600 s) and, with the machine's start, in a 15-minute device budget: each step's
# limit is cut to what is left of SESSION_T less RESERVE_T (20 s for the decisions and the log
# tails), and a step with under MIN_STEP_T (20 s) left is skipped. The default limits add up to
# 570 s (compare, already run on an H200, adds CMP_T).
set -u
OUT_DIR=$(mkdir -p "${1:?usage: bash bench/gpu_session.sh OUTDIR}" && cd "$1" && pwd)
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SITE=$(mktemp -d)
WORK=$(mktemp -d)
cp -r bpalts "$SITE/" && cp -r kernels "$SITE/bpalts/kernels" || exit 1
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${BPALTS_DATA:-}" ] && ls .mnist/*.gz >/dev/null 2>&1; then
    export BPALTS_DATA="$SITE/data"
    mkdir -p "$BPALTS_DATA/MNIST/raw"
    for f in .mnist/*.gz; do gunzip -c "$f" > "$BPALTS_DATA/MNIST/raw/$(basename "$f" .gz)"; done
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

# Rows to time first. The eleventh (H100) and eighteenth (H200) sessions timed every switch built
# without a GPU (bench/results/2026-11-28-h100, -h200); what is left open is the op as shipped,
# so these lead with the default rows at the issues' target shapes (pc_relax[default]: the module
# untouched; the B256 Hebbian rules; the tf32 large shape's default paths), then the reservoir
# and SoftHebb's 3xTF32 on cuBLAS (off: not float32-level on the H200), conv SoftHebb and the
# remaining path rows for the decisions. '|'-separated
# substrings of "name shape"; gpu.py runs the rows in the order of the first substring each
# matches, so a step cut off by its limit loses the last ones.
NEW_ROWS=${NEW_ROWS:-"pc_relax[default]|hebbian_update[gha] B256|softwta_update B256|hebbian_update[oja] B256|hebbian_update[hpca] B256|hebbian_update[nlpca_sym] B256|hebbian_update[instar] B256|hebbian_update[krotov] B256|hebbian_update[gha] tf32x3 B256|softwta_update tf32x3 B256|cublas-graph] tf32|hebbian_update[gha,cublas-blocks] tf32|reservoir_run N2000 B1 |reservoir_run N2000 B256|reservoir_run tf32x3|reservoir_run[cublas-gemm] tf32x3|reservoir_run[triton-gemm] tf32x3|softwta_update[cublas] tf32x3|softwta_update tf32x3 B1024|softwta_conv_update|hebbian_update[gha] B1024|softwta_update B1024|pc_relax[cublas|graph] B256|cublas-split|reservoir_run["}
IFS='|' read -ra NEW_ONLY <<< "$NEW_ROWS"
# Rows to profile: the issues' fp32 target shapes on their default paths (as shipped).
PROFILE_ROWS=${PROFILE_ROWS:-"pc_relax[default] 784-1000-500-250-10 B256 T20|pc_relax[default] 784-861-645-484-10 B256 T3|hebbian_update[gha] B256|softwta_update B256|hebbian_update[gha] tf32x3 B256|reservoir_run N2000 B256 T28 D28|reservoir_run tf32x3 N2000 B256"}
IFS='|' read -ra PROFILE_ONLY <<< "$PROFILE_ROWS"
# Rows whose plain call's host time is broken down (gpu.py --host): on the H100 the plain calls
# of the cuBLAS paths took 0.50 ms against 0.05-0.13 in a CUDA graph.
HOST_ROWS=${HOST_ROWS:-"pc_relax[default] 784-861-645-484-10 B256 T3|pc_relax[default] 784-861-645-484-10 B64|pc_relax[default] 784-1000-500-250-10 B256 T20|hebbian_update[gha] B256|softwta_update B256|reservoir_run N2000 B256 T28 D28|reservoir_run N2000 B1 "}
IFS='|' read -ra HOST_ONLY <<< "$HOST_ROWS"

SESSION_T=${SESSION_T:-570}
RESERVE_T=${RESERVE_T:-20}
MIN_STEP_T=${MIN_STEP_T:-20}
WARM_GPU=${WARM_GPU:-6}
WARM_TILES=${WARM_TILES:-4}
# limit STEP_LIMIT: prints the step's limit cut to what is left of SESSION_T (0: skip the step).
limit() {
    local left=$((SESSION_T - RESERVE_T - SECONDS))
    local t=$(( $1 < left ? $1 : left ))
    echo $(( t < MIN_STEP_T ? 0 : t ))
}
pack() { tar czf "$OUT_DIR/gpu_session.tgz" -C "$WORK" . ; }
for step in ${STEPS:-warm new host profile gpu tiles acc}; do
    case $step in
    warm) T=$(limit "${WARM_T:-60}") ;;
    new) T=$(limit "${NEW_T:-160}") ;;
    profile) T=$(limit "${PROFILE_T:-45}") ;;
    host) T=$(limit "${HOST_T:-40}") ;;
    gpu) T=$(limit "${GPU_T:-125}") ;;
    tiles) T=$(limit "${TILES_T:-70}") ;;
    acc) T=$(limit "${ACC_T:-70}") ;;
    compare) T=$(limit "${CMP_T:-60}") ;;
    *) echo "unknown step $step"; continue ;;
    esac
    if [ "$T" -eq 0 ]; then echo "$step skipped: ${SECONDS}s of SESSION_T=${SESSION_T}s used"; continue; fi
    case $step in
    warm) # the shards of both scripts at once, then one log: every shard's lines, in turn
        for ((k = 0; k < WARM_GPU; k++)); do
            timeout "$T" $PY bench/gpu.py --warm-only --shard "$k/$WARM_GPU" --first "${NEW_ONLY[@]}" \
                > "$WORK/warm_gpu_$k.log" 2>&1 &
        done
        for ((k = 0; k < WARM_TILES; k++)); do
            timeout "$T" $PY bench/gpu_tiles.py --warm-only --shard "$k/$WARM_TILES" \
                > "$WORK/warm_tiles_$k.log" 2>&1 &
        done
        wait
        for f in "$WORK"/warm_*_*.log; do [ -f "$f" ] && { echo "--- $(basename "$f")"; cat "$f"; rm "$f"; }; done \
            > "$WORK/warm.log"
        grep -c ": ok$" "$WORK/warm.log" | sed 's/^/warm: launches compiled and run: /' ;;
    new) timeout "$T" $PY bench/gpu.py --csv "$WORK/new.csv" --quick --no-compile \
            --only "${NEW_ONLY[@]}" > "$WORK/new.log" 2>&1 ;;
    profile) timeout "$T" $PY bench/gpu.py --profile --only "${PROFILE_ONLY[@]}" \
            > "$WORK/profile.log" 2>&1 ;;
    host) timeout "$T" $PY bench/gpu.py --host --only "${HOST_ONLY[@]}" > "$WORK/host.log" 2>&1 ;;
    gpu) # bench/ scripts put bench/ first on sys.path, so bpalts comes from $SITE
        # the rows the new step timed are left out here (GPU_ARGS replaces all of these options)
        if [ -n "${GPU_ARGS:-}" ]; then read -ra GPU_OPTS <<< "$GPU_ARGS"
        else GPU_OPTS=(--no-compile --budget 120 --skip "${NEW_ONLY[@]}"); fi
        timeout "$T" $PY bench/gpu.py --csv "$WORK/gpu.csv" "${GPU_OPTS[@]}" \
            > "$WORK/gpu.log" 2>&1 ;;
    acc) read -ra ACC_OPTS <<< "${ACC_ARGS:---methods hebbian-wta hebbian-pca}"
        timeout "$T" $PY bench/gpu_accuracy.py --csv "$WORK/acc.csv" "${ACC_OPTS[@]}" \
            > "$WORK/acc.log" 2>&1 ;;
    tiles) read -ra TILES_OPTS <<< "${TILES_ARGS:-}"
        timeout "$T" $PY bench/gpu_tiles.py --csv "$WORK/tiles.csv" "${TILES_OPTS[@]}" \
            > "$WORK/tiles.log" 2>&1 ;;
    compare) # run from $SITE: `python -m` would import bpalts from the checkout (no kernels)
        read -ra CMP_OPTS <<< "${CMP_ARGS:-}"
        (cd "$SITE" && timeout "$T" $PY -m bpalts.compare --preset quick --device cuda \
            --no-progress --no-plots --out "$WORK/compare" "${CMP_OPTS[@]}") > "$WORK/compare.log" 2>&1 ;;
    esac
    echo "$step rc $? (limit ${T}s, ${SECONDS}s used)"
    pack
done
if [ -f "$WORK/new.csv" ] || [ -f "$WORK/gpu.csv" ]; then
    echo "=== decisions (bench/gpu_decide.py)"
    $PY bench/gpu_decide.py $(ls "$WORK"/gpu.csv "$WORK"/new.csv 2>/dev/null) > "$WORK/decide.txt" 2>&1
    cp "$WORK/decide.txt" "$OUT_DIR/"
    sed -n '/^$/,$p' "$WORK/decide.txt"  # the decisions: every line after the summary table
fi
pack
for f in new profile host gpu tiles acc compare; do
    [ -f "$WORK/$f.log" ] && { echo "=== $f"; grep -v '^  File\|^    \|^W1' "$WORK/$f.log" | tail -n 45; }
done
exit 0
