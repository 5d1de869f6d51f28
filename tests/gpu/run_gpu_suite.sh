#!/usr/bin/env bash
# The GPU validation + benchmark suite, for a machine with a CUDA GPU (see docs/gpu-results.md).
# usage: bash tests/gpu/run_gpu_suite.sh [OUT_DIR]     writes env.txt, pytest.txt, bench.json there
set -uo pipefail
out="${1:-gpu-results}"
py="${PYTHON:-python}"
mkdir -p "$out"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  | tee "$out/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$out/env.txt" 2>&1 || true
nvcc --version | tail -1 >> "$out/env.txt" 2>&1 || true
"$py" -m pytest -m gpu tests/gpu -q -rs --durations=10 2>&1 | tee "$out/pytest.txt"
status=${PIPESTATUS[0]}
"$py" -m rwkv_tune bench --json > "$out/bench.json" || status=1
exit "$status"
