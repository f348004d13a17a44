#!/usr/bin/env bash
# The device check of issue 11, prepared for a session that is lent a GPU (one call, ~10 min):
#   bash benchmarks/gpu_check.sh        # on the GPU machine, from the repository root
# It writes every figure it measures as JSON/text under $OUT (default ./gpu-check); nothing in
# the repository states a GPU figure that did not come from such a run.
set -uo pipefail
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
python -c "import jax; print(jax.__version__, jax.devices())" | tee "$OUT/devices.txt"

# 1. Correctness on the GPU: the Pallas kernels compiled (not interpreted) against the fused
#    scans, at full float32 precision (TF32 would not meet the 1e-5 of the tests).
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 240 python -m pytest -q -x \
  tests/test_pallas.py tests/test_fused.py 2>&1 | tail -5 | tee "$OUT/tests.txt"

# 2. Speed at batch 64: jaxseq (fused, then pallas) against PyTorch's three modes, same run.
timeout 240 python benchmarks/throughput.py --no-adder-run --markdown \
  --out "$OUT/throughput-gpu.json" 2>&1 | tail -20
timeout 120 python benchmarks/throughput.py --no-adder-run --no-torch --implementation pallas \
  --out "$OUT/throughput-gpu-pallas.json" 2>&1 | tail -8

# 3. The whole study, wall time including start-up and compilation (target: under 20 s).
if [ -n "${JAXSEQ_DATA_DIR:-}" ]; then
  start=$(date +%s.%N)
  timeout 200 python experiments/mnist.py --cell all --no-progress --out-dir /tmp/gpu-study-all --overwrite \
    > "$OUT/study-all.txt" 2>&1
  mid=$(date +%s.%N)
  timeout 200 python experiments/mnist.py --cell lstm --bidirectional --no-progress \
    --out-dir /tmp/gpu-study-bilstm --overwrite > "$OUT/study-bilstm.txt" 2>&1
  end=$(date +%s.%N)
  python - "$start" "$mid" "$end" > "$OUT/study-seconds.json" <<'PY'
import json, sys
start, mid, end = map(float, sys.argv[1:])
print(json.dumps({"cell_all_s": mid - start, "bilstm_s": end - mid, "total_s": end - start}))
PY
  cat "$OUT/study-seconds.json"
else
  echo "JAXSEQ_DATA_DIR not set: the study timing was skipped" | tee "$OUT/study-seconds.json"
fi
