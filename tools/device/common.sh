# Sourced by the scripts here, on the GPU machine, from the repository root (the device tool's cwd):
# the SGLang bundle, NCCL without NVLink multicast, a timeline and a packer for $OUT/r.
source .device/env.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HEAL_MODELS=/tmp/heal-models
mkdir -p "$OUT/r"
T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))s"; }
log() { echo "[$(el)] $*" >> "$OUT/r/timeline.txt"; }
# Wait for the background jobs, at most until LIMIT seconds after start, then pack $OUT/r into $OUT/r.tgz
# (the device tool returns only a few files one by one; the archive carries the rest).
finish() {
  local lim=$1
  while [ $(( $(date +%s) - T0 )) -lt "$lim" ] && [ -n "$(jobs -rp)" ]; do sleep 3; done
  log "packing (jobs left: $(jobs -rp | wc -l))"
  nvidia-smi > "$OUT/r/smi-end.txt" 2>&1
  tar czf "$OUT/r.tgz" -C "$OUT" r
}
{ nvidia-smi -L; git log --oneline -1; git status --short; } > "$OUT/r/commit.txt" 2>&1
