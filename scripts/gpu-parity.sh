#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and onnxruntime-node's CUDA provider installed (README, "GPU"),
# compile every example (examples/*.ts) with seeded weights and run parity on cuda against cpu and
# the float64 reference; prints one summary line per model. Reports (JSON, HTML) go to $OUT_DIR.
#
#   scripts/gpu-parity.sh                 # 4096 generated rows per model
#   ROWS=100000 scripts/gpu-parity.sh     # more rows
#   PROVIDER=tensorrt scripts/gpu-parity.sh
#
# Exit 0 when every model passes, 1 when one mismatches, 2 when the provider is missing (its
# install line is printed once) or a model fails to build.
set -uo pipefail
cd "$(dirname "$0")/.."

rows="${ROWS:-4096}"
seed="${SEED:-7}"
provider="${PROVIDER:-cuda}"
out="${OUT_DIR:-build/gpu-parity}"
aesm=(node bin/aesm.mjs)
mkdir -p "$out"

status=0
shopt -s nullglob
models=(examples/*.ts)
if [ ${#models[@]} -eq 0 ]; then
  echo "gpu-parity: no examples/*.ts" >&2
  exit 2
fi
for model in "${models[@]}"; do
  name="$(basename "$model" .ts)"
  if ! "${aesm[@]}" init-weights "$model" --seed "$seed" -o "$out/$name.safetensors" >"$out/$name.build.log" 2>&1 ||
    ! "${aesm[@]}" compile "$model" --weights "$out/$name.safetensors" -o "$out/$name.onnx" >>"$out/$name.build.log" 2>&1; then
    echo "ERROR $name: build failed (see $out/$name.build.log)"
    status=2
    continue
  fi
  "${aesm[@]}" parity "$model" --weights "$out/$name.safetensors" --onnx "$out/$name.onnx" \
    --provider "$provider" --provider cpu --rows "$rows" --seed "$seed" --no-progress --summary \
    --json "$out/$name.json" --html "$out/$name.html" 2>"$out/$name.err"
  rc=$?
  if [ $rc -eq 2 ]; then
    # a missing provider fails every model the same way: say it once and stop
    cat "$out/$name.err" >&2
    exit 2
  fi
  [ $rc -ne 0 ] && [ $status -eq 0 ] && status=1
done
exit $status
