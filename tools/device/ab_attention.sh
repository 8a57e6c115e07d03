# Attention A/B on one GPU: the shipped launches' time and bits digest, this tree against .device/base
# (a copy of the base commit: git archive main | tar x -C .device/base), twice each, alternating; then
# HEAL against SGLang's Triton kernels, and the attention kernel tests on this tree (~300 s).
#   Run:  CUDA_VISIBLE_DEVICES=0 bash tools/device/ab_attention.sh
source tools/device/common.sh
for i in 1 2; do
  timeout 60 python -m bench.kernels.probe_attention --shipped > "$OUT/r/shipped-new$i.txt" 2>&1
  (cd .device/base && PYTHONPATH=$PWD timeout 60 python -m bench.kernels.probe_attention --shipped) \
    > "$OUT/r/shipped-base$i.txt" 2>&1
done
log "shipped A/B done"
timeout 90 python -m bench.kernels.probe_attention --vs-sglang > "$OUT/r/vs-sglang.txt" 2>&1
timeout 280 python -m pytest -q -p no:cacheprovider --tb=short -rfE tests/kernels/test_attention.py \
  tests/kernels/test_attention_parts.py tests/kernels/test_nonfinite.py tests/kernels/test_nonfinite_properties.py \
  tests/kernels/test_gpu_invariance.py > "$OUT/r/kern.txt" 2>&1
echo "rc=$?" >> "$OUT/r/kern.txt"; log "kernels: $(grep -E 'passed|failed' "$OUT/r/kern.txt" | tail -1)"
tar czf "$OUT/r.tgz" -C "$OUT" r
for f in shipped-new1 shipped-base1 shipped-new2 shipped-base2 vs-sglang; do echo "== $f"; tail -6 "$OUT/r/$f.txt"; done
grep -hE "^(FAILED|ERROR)|passed|failed|rc=" "$OUT/r/kern.txt" | head -10
