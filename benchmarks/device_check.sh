#!/usr/bin/env bash
# One lent GPU session's kernel checks as one command (benchmarks/results/kernel_notes.md, "Running the check"):
#
#   bash benchmarks/device_check.sh          # in the repo root on the device machine, with $OUT set
#
# 0. wgmma_check.py: the Gluon GEMM's correctness (wgmma and mma.sync; $OUT/wgmma_check.log), and (apart, off
#    unless WGMMA_TIME_S is set: the tuning below times every candidate) its timing table on the goal shapes at
#    M = 1 and 16 (wgmma_<gpu>.md); if the check fails, AWQ_AO_DISABLE_WGMMA=1 keeps the Gluon kernels (the
#    staged GEMV too) out of the steps after it;
# 0b. (STAGED_S, off by default) staged_probe.py: the staged GEMV's configs, a grid wider than the tuner's, timed
#    beside bf16 and the shipped pick on the goal shapes at M = 1 and 2 ($OUT/staged_probe_<gpu>.md);
# 1. gpu_check.py on the three goal shapes at M = 1 and 16: programmatic dependent launch checked first (off for
#    the steps after it too if it fails) and its effect timed on the 8192 x 8192 picks; every candidate (the staged GEMV's among them at
#    M = 1, first timed here) checked against a float64
#    reference, the fused split-K stress test, the compiled and CUDA-graph module checks, then tuning and the
#    timing table ($OUT: gpu_check.log, tuned_<gpu>.json, kernels_<gpu>.md, each written as the run goes);
# 2. bench_layout.py: read rates by layout, the split-K reduce launch and the GEMM's activation launch alone;
# 3. model_check.py: the user's flow, whole models compiled (transformers' generate() with a static cache and
#    CUDA graphs; the gpt-fast model's compiled decode), tokens against eager ($OUT/model_check.log);
# 4. Nsight Compute's stall reasons, in one profile each: the kernel step 1's tuning picked at M = 1, the staged
#    GEMV at M = 1 (64 x 256 on 2 warps, split 8: what its instruction count bought, picked or not) and the
#    kernel the tuning picked at M = 16 (the GEMM's stall reasons were never taken).
#
# Each step has its own time limit (seconds; override by environment), so a slow step cannot starve the
# rest: WGMMA_S (default 150: the check, 252 cases, within it on 2026-11-28; skipped while int4_wgmma.py is the
# source that passed; what it leaves of its limit is added to CHECK_S), WGMMA_TIME_S (0, off; 40 for its
# timing, 15 configs per row: 5 wgmma, 1 overlapped, 3 mma.sync, 5 late_dequant, 1 of those masked; the first
# rows only, since step 1's tuning times every candidate too and logs each), STAGED_S (0, off: staged_probe.py),
# CHECK_S (330, and what step 0 left: 480 with the check skipped; 93-96 and 77-89 candidates per goal shape at M = 1 and 16, 16
# staged GEMV, 12 wave-filling splits and 4 256-row Gluon tiles among them; the step took 263 s in the run of 2026-11-28 with 97-111 and
# 71-76, the Gluon GEMM's 43 compiling apart), LAYOUT_S (0: off, its results are in), MODEL_S (60: 38-46 s on 2026-11-28), NCU_S (45: three kernels,
# last): 9 minutes 45 s of limits in all, plus the install, inside one run's 10 (a run cut short there loses the
# profile only). A limit of 0
# skips its step. CHECK_M (default "1 16", the goal's M values; the shipped table keeps its M = 2 picks) sets
# step 1's M values. The device machines have torch and Triton but no torchao and no network: the torchao
# wheel travels in .whl/ (named in the run's carry; see kernel_notes.md for how to fetch it).
set -u
: "${OUT:?set OUT to the folder whose files come back}"
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
ln -sfn ../kernels awq_ao/kernels  # the package's kernels, importable without installing the project
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader

# 0. the Gluon kernel first, in a process of its own. A variant that fails its check (mma.sync, late_dequant,
# the overlap) is kept out of the rest (AWQ_AO_GLUON_OFF); if wgmma itself fails, or the check faults or runs
# out of time (no list of failures written), the whole kernel is (AWQ_AO_DISABLE_WGMMA=1). Its timing table
# runs apart (the short config list), so a timing cut short cannot turn anything off
# The check is skipped when the Gluon GEMM's source is the one whose check last passed on a lent GPU (its sha256
# in benchmarks/results/wgmma_check_passed.sha256; WGMMA_FORCE=1 runs it anyway), and when WGMMA_S=0; step 1
# gets the seconds of WGMMA_S that the check did not use. gpu_check.py still checks every Gluon candidate against
# float64 before the tuning times it.
rm -f "$OUT/gluon_failed_variants.txt"
wgmma_s=${WGMMA_S:-150}
if [ "${WGMMA_FORCE:-0}" != 1 ] && [ "$(sha256sum < kernels/int4_wgmma.py | cut -d' ' -f1)" = \
     "$(cut -d' ' -f1 benchmarks/results/wgmma_check_passed.sha256 2>/dev/null)" ]; then
  echo "wgmma_check skipped: kernels/int4_wgmma.py is the source whose check passed (wgmma_check_passed.sha256)"
  wgmma_s=0
fi
step0_start=$SECONDS
if [ "$wgmma_s" != 0 ]; then
  timeout "$wgmma_s" python3 benchmarks/wgmma_check.py --no-bench --out "$OUT" 2>&1 | tee "$OUT/wgmma_check.log"
  status=${PIPESTATUS[0]}
  failed=$(cat "$OUT/gluon_failed_variants.txt" 2>/dev/null)
  echo "wgmma_check exit: $status, failed variants: ${failed:-none}"
  if [ "$status" != 0 ] && { [ ! -f "$OUT/gluon_failed_variants.txt" ] || echo "$failed" | grep -qw wgmma; }; then
    export AWQ_AO_DISABLE_WGMMA=1
  else
    export AWQ_AO_GLUON_OFF="${failed// /,}"
  fi
  rm -f "$OUT/gluon_failed_variants.txt"  # (said in the line above) at most 8 files come back from $OUT: 7 are left
fi
check_s=$(( ${CHECK_S:-330} + ${WGMMA_S:-150} - (SECONDS - step0_start) ))  # and what the check left of its limit
if [ "${AWQ_AO_DISABLE_WGMMA:-0}" != 1 ] && [ "${WGMMA_TIME_S:-0}" != 0 ]; then
  timeout "${WGMMA_TIME_S:-0}" python3 benchmarks/wgmma_check.py --no-check --short --out "$OUT" 2>&1 \
    | tee -a "$OUT/wgmma_check.log"
fi

if [ "${STAGED_S:-0}" != 0 ]; then  # the staged GEMV's own grid against the picks and bf16 (staged_probe.py)
  timeout "${STAGED_S:-0}" python3 benchmarks/staged_probe.py --out "$OUT" > "$OUT/staged_probe.log" 2>&1
  echo "staged_probe exit: $?"
fi

if [ "${CHECK_S:-330}" != 0 ]; then
  # shellcheck disable=SC2086  # CHECK_M is a list of M values
  timeout "$check_s" python3 benchmarks/gpu_check.py --out "$OUT" --shapes 3 --m ${CHECK_M:-1 16}
  echo "gpu_check exit: $?"
  if grep -q "programmatic dependent launch failed" "$OUT/gpu_check.log"; then
    export AWQ_AO_PDL=0  # (gpu_check turned it off for its own run) the steps after it run without PDL too
  fi
fi

if [ "${LAYOUT_S:-0}" != 0 ]; then
  timeout "${LAYOUT_S:-0}" python3 benchmarks/bench_layout.py > "$OUT/bench_layout.txt" 2>&1
  echo "bench_layout exit: $?"
fi

if [ "${MODEL_S:-60}" != 0 ]; then
  timeout "${MODEL_S:-60}" python3 benchmarks/model_check.py 2>&1 | tee "$OUT/model_check.log"
  echo "model_check exit: ${PIPESTATUS[0]}"
fi

cp "$OUT"/tuned_*.json kernels/tuned/ 2>/dev/null  # the picks just tuned, for the probe (loaded after the shipped table)
NCU=/usr/local/cuda/bin/ncu
# SpeedOfLight: DRAM, L2, L1 / shared and SM throughput against their peaks (a few passes more), for the M = 16
# question of the twelfth session: whether the activation each program re-reads (as many bytes from L2 as the
# weight from HBM with 64-row tiles, kernel_notes.md) is what the kernel waits on
SECTIONS=(--section SpeedOfLight --section WarpStateStats --section Occupancy --section SchedulerStats --section LaunchStats
          --metrics "regex:smsp__pcsamp_warps_issue_stalled_.*")
if [ "${NCU_S:-45}" != 0 ]; then  # select_config's picks (the table just tuned) at M = 1 and 16, the staged GEMV between
  timeout "${NCU_S:-45}" "$NCU" -k 'regex:_int4_(gemv|gemm|wgmma|gemv_staged)_kernel' --launch-count 3 "${SECTIONS[@]}" \
    python3 benchmarks/ncu_probe.py --once --also-m1 '{"kind": "staged", "block_n": 64, "block_k": 256,
    "num_warps": 2, "split_k": 8}' > "$OUT/ncu_m1_pick_staged_m16_pick.txt" 2>&1
  echo "ncu (the M = 1 pick, the staged GEMV, the M = 16 pick) exit: $?"
fi
ls -l "$OUT"
