# The GPU checks a kernel change needs before it lands, in one call on a 2-GPU host (~450 s on two H200s):
# the project's own GPU tests, arranged so the two GPUs stay busy. TP=2 vs TP=1 (test_gpu_tp.py, its
# engines side by side) on both GPUs; the greedy matrix joins GPU 1 once the TP engines have passed
# SGLang's memory-balance check; then the seeded matrix on GPU 0 and the design command on GPU 1.
#   Run:  bash tools/device/correctness.sh      (results under $OUT/r, a summary printed last)
source tools/device/common.sh
gpu_test() {  # gpu_test NAME LIMIT PYTEST-ARGS...: one pytest run, its output in $OUT/r/NAME.txt
  local name=$1 lim=$2; shift 2
  HEAL_RESULTS=$OUT/r timeout "$lim" python -m pytest -q -p no:cacheprovider --tb=short -rfE "$@" \
    > "$OUT/r/$name.txt" 2>&1
  echo "rc=$?" >> "$OUT/r/$name.txt"; log "$name: $(grep -E 'passed|failed' "$OUT/r/$name.txt" | tail -1)"
}
python -c "from bench.e2e import models; models.make('llama-small', '$HEAL_MODELS/llama-small')" > "$OUT/r/make.txt" 2>&1
log "model made"
( CUDA_VISIBLE_DEVICES=0,1 gpu_test tp 330 tests/sglang/test_gpu_tp.py
  CUDA_VISIBLE_DEVICES=0 gpu_test seeded 200 tests/sglang/test_gpu_e2e.py -k seeded_sampling_is_bitwise &
  wait ) &
( sleep 100
  CUDA_VISIBLE_DEVICES=1 gpu_test matrix 330 tests/sglang/test_gpu_e2e.py \
    -k "bitwise_identical_across_the_matrix and not seeded"
  CUDA_VISIBLE_DEVICES=1 gpu_test design 150 tests/sglang/test_gpu_e2e.py -k design_command ) &
finish "${LIMIT:-560}"
pkill -f pytest; pkill -f bench; pkill -f sglang; sleep 1
cat "$OUT/r/commit.txt" "$OUT/r/timeline.txt"
grep -hE "^(FAILED|ERROR)|rc=" "$OUT/r"/{tp,matrix,seeded,design}.txt
find "$OUT/r" -name summary.json | xargs -r cat | tr -d ' \n' | cut -c1-1500
