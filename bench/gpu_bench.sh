#!/usr/bin/env bash
# The GPU benchmark, on a machine with CUDA 13 and cuDNN 9 (the lent GPU
# machine: see ../shared/gpu/README.md), in one run on one GPU:
#   - the bare ONNX Runtime CUDA session on ready tensors, batch 1, 4, 8, 16;
#   - the element at 1080p and 4K (raw frames in, fakesink out);
#   - u2net-fast 1.0.0's process_batch + mask_batch on the same frames, batch 5;
#   - the model's throughput in TFLOP/s (U2Net: 117 GFLOP a 320x320 frame).
# The model is U2Net with random weights (seed 0), exported from
# u2net_fast.model.U2NET itself, so both sides run the same network.
#
# Here: cargo bench --bench throughput --no-run, then
#   ../shared/gpu/pack.sh target/release/libgstu2netmatte.so "$(ls -t target/release/deps/throughput-* | grep -v '\.d$' | head -1)"
#   pip download --no-deps u2net-fast==1.0.0 -d .gpu
# On the device (after `source .gpu/on-device.sh`, carrying .deps/photos too):
#   bash bench/gpu_bench.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/u2m-gpu}
mkdir -p "$out/model"
site=/tmp/u2m-site
[ -d "$site/u2net_fast" ] || python3 -m pip install -q --no-deps --target "$site" "$top"/.gpu/u2net_fast-1.0.0-py3-none-any.whl
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
# The ONNX model first (no frames: export only).
python3 "$top/bench/u2netfast_bench.py" "$out/model" 1 > "$out/export.json"
# The carried benchmark binary is on PATH (on-device.sh) as throughput-<hash>.
bench=${BENCH_BIN:-$(command -v "$(compgen -c throughput- | head -1)" || true)}
[ -n "$bench" ] && [ -x "$bench" ] || { echo "no benchmark binary on PATH: set BENCH_BIN" >&2; exit 1; }
BENCH_TOP=$top BENCH_PROVIDER=cuda BENCH_CONV_SEARCH=${BENCH_CONV_SEARCH:-heuristic} BENCH_MODEL=$out/model/u2net_random.onnx BENCH_BATCHES=1,4,8,16 \
  BENCH_FRAMES=${BENCH_FRAMES:-32} BENCH_REMBG_PYTHON= BENCH_U2NETFAST_PYTHON=python3 BENCH_GFLOP_PER_FRAME=117 \
  "$bench" --bench | tee "$out/gpu_bench.md"
