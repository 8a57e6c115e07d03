# End-to-end A/B on a 2-GPU host (~250 s on two H200s): HEAL of this tree on GPU 0 and of .device/base (a
# copy of the base commit: git archive main | tar x -C .device/base) on GPU 1, side by side, then BF16 on
# GPU 0, so each tree's ratio has BF16 from the same host. Each run journals its finished workloads
# (bench/journal.py), so a run cut by the limit keeps them.
#   Run:  bash tools/device/e2e_ab.sh      (WORKLOADS=a,b,... to choose; results under $OUT/r)
source tools/device/common.sh
W=${WORKLOADS:-ttft_4096,ttft_16384,prefill_16x4096,tput_64x128x128,decode_b1_ctx128,step_b16_ctx4096}
python -c "from bench.e2e import models; models.make('llama-8b', '$HEAL_MODELS/llama-8b')" > "$OUT/r/make.txt" 2>&1
log "model made"
e2e() {  # e2e TREE GPU NAME LIMIT MODE: one bench.run of MODE on W, from TREE (its code first on the path)
  local tree=$1 g=$2 name=$3 lim=$4 mode=$5
  (cd "$tree" && PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} CUDA_VISIBLE_DEVICES=$g timeout "$lim" \
     python -m bench.run --set quick --out "$OUT/r/$name.json" --e2e-modes "$mode" --e2e-workloads "$W") \
    > "$OUT/r/$name.log" 2>&1
  log "$name rc=$?"
}
( e2e . 0 e2e-heal 240 heal; e2e . 0 e2e-bf16 200 bf16 ) &
e2e .device/base 1 e2e-heal-base 240 heal &
finish "${LIMIT:-560}"
pkill -f bench.run; pkill -f sglang
cat "$OUT/r/commit.txt" "$OUT/r/timeline.txt"
for f in e2e-heal e2e-heal-base e2e-bf16; do
  echo "== $f"
  src="$OUT/r/$f.json"; [ -f "$src" ] || src="$OUT/r/$f.partial.jsonl"
  [ -f "$src" ] && python -m bench.report "$src" | grep "^| llama" | cut -d'|' -f4-9
done
