# The GPU checks a kernel change needs before it lands, in one call on a 2-GPU host (~450 s on two H200s):
#   TP=2 vs TP=1 (greedy and seeded, chunked) and the greedy matrix through bench.e2e.repro, engines side
#   by side on fixed KV pools; then the seeded matrix and the design command (pytest), one per GPU.
#   Run:  bash tools/device/correctness.sh      (results under $OUT/r, a summary printed last)
source tools/device/common.sh
SMALL=$(python -c "from bench.e2e import models; print(models.make('llama-small', '$HEAL_MODELS/llama-small'))" \
        2>"$OUT/r/make.txt" | tail -1)
log "model: $SMALL"
( export CUDA_VISIBLE_DEVICES=0,1 HEAL_ROW_SHARDS=4
  timeout 300 python -m bench.e2e.repro --model-path "$SMALL" --modes heal --variants base,tp2,tp2-chunk64 \
    --sampling greedy,seeded --parallel 3 --deadline 290 --out "$OUT/r/repro-heal-tp" > "$OUT/r/tp.txt" 2>&1
  echo "rc=$?" >> "$OUT/r/tp.txt"; log "tp done"
  ( export CUDA_VISIBLE_DEVICES=0
    HEAL_RESULTS=$OUT/r timeout 200 python -m pytest -q -p no:cacheprovider --tb=short -rfE \
      tests/sglang/test_gpu_e2e.py -k "seeded_sampling_is_bitwise" > "$OUT/r/seeded.txt" 2>&1
    echo "rc=$?" >> "$OUT/r/seeded.txt"; log "seeded done" ) &
  ( export CUDA_VISIBLE_DEVICES=1
    timeout 150 python -m pytest -q -p no:cacheprovider --tb=short -rfE tests/sglang/test_gpu_e2e.py \
      -k "design_command" > "$OUT/r/design.txt" 2>&1
    echo "rc=$?" >> "$OUT/r/design.txt"; log "design done" ) &
  wait ) &
# the matrix joins GPU 1 once the TP engines have passed SGLang's memory-balance check
( sleep 100; export CUDA_VISIBLE_DEVICES=1
  timeout 330 python -m bench.e2e.repro --model-path "$SMALL" --modes heal --parallel 4 --deadline 320 \
    --out "$OUT/r/repro-heal-llama-small" > "$OUT/r/matrix.txt" 2>&1
  echo "rc=$?" >> "$OUT/r/matrix.txt"; log "matrix done" ) &
finish "${LIMIT:-560}"
pkill -f pytest; pkill -f bench; pkill -f sglang; sleep 1
cat "$OUT/r/commit.txt" "$OUT/r/timeline.txt"
for f in tp matrix; do echo "== $f"; grep -E "identical|heal |failed|rc=" "$OUT/r/$f.txt" | head -12; done
for f in seeded design; do echo "== $f"; grep -hE "^(FAILED|ERROR)|passed|failed|rc=" "$OUT/r/$f.txt" | head -5; done
