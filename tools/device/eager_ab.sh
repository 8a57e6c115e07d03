# HEAL_FAST_LAUNCH's eager A/B on one quiet GPU (~530 s on an H200 host): everything in sequence on GPU 0,
# nothing else on the host, because eager decode is host-bound and a second engine loading or compiling
# beside it moves its figures (fast_launch.sh's side-by-side runs of 2026-11-28 did: a half-length round
# timed while the other GPU's engine was loading). Host time per launcher (eager_overhead) with and
# without, then eager decode end to end: HEAL with, HEAL without, BF16.
#   Run:  bash tools/device/eager_ab.sh      (results under $OUT/r)
source tools/device/common.sh
W=${WORKLOADS:-decode_b1_ctx128,step_b16_ctx4096}
python -c "from bench.e2e import models; models.make('llama-8b', '$HEAL_MODELS/llama-8b')" > "$OUT/r/make.txt" 2>&1
log "model made"
e2e() {  # e2e NAME LIMIT MODE FAST
  CUDA_VISIBLE_DEVICES=0 HEAL_FAST_LAUNCH=$4 timeout "$2" python -m bench.run --set quick --out "$OUT/r/$1.json" \
    --e2e-modes "$3" --e2e-variants eager --e2e-workloads "$W" > "$OUT/r/$1.log" 2>&1
  log "$1 rc=$?"
}
(
  for f in 0 1; do
    CUDA_VISIBLE_DEVICES=0 HEAL_FAST_LAUNCH=$f timeout 60 python -m bench.kernels.eager_overhead \
      > "$OUT/r/eager-overhead-fast$f.txt" 2>&1
    log "eager_overhead fast=$f rc=$?"
  done
  e2e eager-heal-fast 165 heal 1
  e2e eager-heal-triton 165 heal 0
  e2e eager-bf16 150 bf16 0
) &
finish "${LIMIT:-570}"
pkill -f bench.run; pkill -f sglang
cat "$OUT/r/commit.txt" "$OUT/r/timeline.txt"
paste "$OUT/r/eager-overhead-fast0.txt" "$OUT/r/eager-overhead-fast1.txt" 2>/dev/null | cut -c1-140
for f in eager-heal-fast eager-heal-triton eager-bf16; do
  echo "== $f"
  src="$OUT/r/$f.json"; [ -f "$src" ] || src="$OUT/r/$f.partial.jsonl"
  [ -f "$src" ] && python -m bench.report "$src" | grep "^| llama" | cut -d'|' -f4-10
done
