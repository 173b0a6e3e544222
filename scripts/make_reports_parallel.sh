#!/usr/bin/env bash
# Regenerate reports/ on a many-core machine: the same evaluation as scripts/make_reports.sh (same budget,
# same flags), split into one process per (model, chain) that share each model's cache folder, then one
# combining run per model that finds every unit in the cache and writes the report.  The cache is keyed
# by everything that decides a result, so the combined report is the one a single process would write.
#
# Usage: scripts/make_reports_parallel.sh [--full] [-n N] [--out DIR] [--deadline SECONDS]
#   --deadline: stop waiting for the per-chain processes after SECONDS (they keep running); a second call
#   with the same --out resumes from the cache.  Heavy (random) chains get 2 chain threads.
# Budget: the session budget of scripts/make_reports.sh (100 steps, 1 restart, EOT 5, 500 queries, n = 100;
#   its header gives the measurements behind it); the wall time of the last run is printed at the end.
set -euo pipefail

FULL="${FENCEBOX_FULL:-0}"
N=""
OUT="reports"
DEADLINE=0
PYTHON="${PYTHON:-python}"
CHAINS="none,fencebox-default,fencebox-random,xu2018-mnist,guo2018-bitdepth,guo2018-jpeg"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --full) FULL=1; shift ;;
    -n) N="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --deadline) DEADLINE="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ "$FULL" == "1" ]]; then
  BUDGET=(); N="${N:-500}"
else
  BUDGET=(--attacks apgd-ce,apgd-dlr,pgd --steps 100 --restarts 1 --eot 5 --queries 500
          --select-draws 5 --draws 20 --check-n 100)
  N="${N:-100}"
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

evaluate() {  # model folder chains workers
  local model="$1" folder="$2" chains="$3" workers="$4" extra=()
  [[ "$model" == "builtin:mnist-adv" ]] && extra=(--source builtin:mnist)
  "$PYTHON" -m fencebox.cli evaluate --model "$model" "${extra[@]}" -n "$N" --chains "$chains" \
    --threat all --eps 0.1,0.2,0.3 "${BUDGET[@]}" --threads 1 --workers "$workers" --service http \
    --device cpu --save-adversarials --out "$OUT/$folder"
}

mkdir -p "$OUT/logs"
start=$(date +%s)
pids=()
for pair in builtin:mnist=mnist builtin:mnist-adv=mnist-adv; do
  model="${pair%%=*}"; folder="${pair##*=}"
  for chain in ${CHAINS//,/ }; do
    workers=1; [[ "$chain" == fencebox-* ]] && workers=2
    evaluate "$model" "$folder.parts/$chain" "$chain" "$workers" >"$OUT/logs/$folder.$chain.log" 2>&1 &
    pids+=($!)
  done
done
for pid in "${pids[@]}"; do
  if [[ "$DEADLINE" != 0 ]]; then
    while kill -0 "$pid" 2>/dev/null && (( $(date +%s) - start < DEADLINE )); do sleep 5; done
    kill -0 "$pid" 2>/dev/null && { echo "deadline: per-chain runs still going; rerun to resume" >&2; exit 3; }
  fi
  wait "$pid" || { echo "a per-chain run failed: see $OUT/logs" >&2; exit 1; }
done
echo "per-chain runs done in $(( $(date +%s) - start )) s" >&2
# Combine: one cache per model, gathered from the per-chain folders, then a run that finds every unit there.
for folder in mnist mnist-adv; do
  mkdir -p "$OUT/$folder/cache" "$OUT/$folder/adversarials"
  for d in "$OUT/$folder.parts"/*/; do
    cp -n "$d"cache/* "$OUT/$folder/cache/" 2>/dev/null || true
  done
done
evaluate builtin:mnist mnist "$CHAINS" 2 >"$OUT/logs/mnist.combine.log" 2>&1 &
a=$!
evaluate builtin:mnist-adv mnist-adv "$CHAINS" 2 >"$OUT/logs/mnist-adv.combine.log" 2>&1 &
b=$!
wait "$a"; wait "$b"
echo "reports regenerated in $(( $(date +%s) - start )) s (full=$FULL, n=$N)" >&2
"$PYTHON" scripts/summarize_reports.py "$OUT/mnist" "$OUT/mnist-adv"
