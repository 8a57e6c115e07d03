# HEAL_FAST_LAUNCH (heal_kernels/_launch.py) on a 2-GPU host, before its default is turned on (~8 min):
#   GPU 0: the kernel GPU tests in verify mode (each fast launch checked against Triton's own cache, outputs
#          against Triton's dispatch bit for bit), then eager decode end to end with the fast path;
#   GPU 1: the host time per launcher with and without it (eager_overhead), then eager decode end to end
#          without it, then BF16 eager: the same workloads on the same host.
# Then on both GPUs: HEAL_FAST_LAUNCH=verify bash tools/device/correctness.sh (the reproducibility matrix).
#   Run:  bash tools/device/fast_launch.sh      (results under $OUT/r)
source tools/device/common.sh
W=${WORKLOADS:-decode_b1_ctx128,step_b16_ctx4096}
python -c "from bench.e2e import models; models.make('llama-8b', '$HEAL_MODELS/llama-8b')" > "$OUT/r/make.txt" 2>&1
log "model made"
e2e() {  # e2e GPU NAME LIMIT MODE FAST
  CUDA_VISIBLE_DEVICES=$1 HEAL_FAST_LAUNCH=$5 timeout "$3" python -m bench.run --set quick --out "$OUT/r/$2.json" \
    --e2e-modes "$4" --e2e-variants eager --e2e-workloads "$W" > "$OUT/r/$2.log" 2>&1
  log "$2 rc=$?"
}
(
  CUDA_VISIBLE_DEVICES=0 HEAL_FAST_LAUNCH=verify timeout 200 python -m pytest -q -x tests/kernels/test_launch.py \
    tests/kernels/test_gpu_invariance.py tests/kernels/test_attention_parts.py > "$OUT/r/kernel-tests-verify.txt" 2>&1
  log "kernel tests (verify) rc=$?"
  e2e 0 eager-heal-fast 200 heal 1
) &
(
  for f in 0 1; do
    CUDA_VISIBLE_DEVICES=1 HEAL_FAST_LAUNCH=$f timeout 60 python -m bench.kernels.eager_overhead \
      > "$OUT/r/eager-overhead-fast$f.txt" 2>&1
    log "eager_overhead fast=$f rc=$?"
  done
  e2e 1 eager-heal-triton 200 heal 0
  e2e 1 eager-bf16 150 bf16 0
) &
finish "${LIMIT:-560}"
pkill -f bench.run; pkill -f sglang
cat "$OUT/r/commit.txt" "$OUT/r/timeline.txt"
tail -3 "$OUT/r/kernel-tests-verify.txt"
paste "$OUT/r/eager-overhead-fast0.txt" "$OUT/r/eager-overhead-fast1.txt" 2>/dev/null | cut -c1-140
for f in eager-heal-fast eager-heal-triton eager-bf16; do
  echo "== $f"
  src="$OUT/r/$f.json"; [ -f "$src" ] || src="$OUT/r/$f.partial.jsonl"
  [ -f "$src" ] && python -m bench.report "$src" | grep "^| llama" | cut -d'|' -f4-9
done
