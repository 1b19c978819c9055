#!/usr/bin/env python3
"""u2net-fast 1.0.0 on the GPU, for `make bench-gpu` (issue: the CUDA path).

    u2netfast_bench.py OUT_DIR RUNS FRAME.rgb:WIDTHxHEIGHT [...]

1. Builds u2net_fast.model.U2NET(3, 1) with random weights (seed 0): the
   speed does not depend on the weights, and no weights need downloading.
   Saves its state dict (u2net_random.pth, what u2net-fast loads) and
   exports the same module to ONNX with a dynamic batch (u2net_random.onnx,
   what the element runs).
2. Times Remover.process_batch + mask_batch (its default batch of 5,
   apply_mask) on the frames already in memory, as u2net-fast's own figures
   are taken without file I/O: images/s, median of RUNS.
3. Writes u2net-fast's masks of the first frames (OUT_DIR/u2netfast_mask_N.raw)
   so that the benchmark can compare them with the element's.

Prints one JSON object. Needs torch, torchvision and a CUDA device; the
wheel of u2net-fast is pure Python (install it with --no-deps).
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from u2net_fast.model import U2NET
from u2net_fast.remover import Remover

out_dir, runs = sys.argv[1], int(sys.argv[2])
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(0)
net = U2NET(3, 1).eval()
pth = os.path.join(out_dir, "u2net_random.pth")
torch.save(net.state_dict(), pth)
onnx_path = os.path.join(out_dir, "u2net_random.onnx")
with torch.no_grad():
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 320, 320),
        onnx_path,
        input_names=["input"],
        output_names=["d0", "d1", "d2", "d3", "d4", "d5", "d6"],
        dynamic_axes={"input": {0: "batch"}, **{f"d{i}": {0: "batch"} for i in range(7)}},
        opset_version=17,
    )
net.load_state_dict(torch.load(pth))
net.cuda().eval()
remover = Remover(model_path=pth, batch_size=5, apply_mask=True, save_output=False)

result = {"u2net_fast": "1.0.0", "torch": torch.__version__, "onnx": onnx_path, "frames": {}}
for spec in sys.argv[3:]:
    path, size = spec.split(":")
    w, h = (int(v) for v in size.split("x"))
    frame = torch.from_numpy(np.fromfile(path, dtype=np.uint8).reshape(h, w, 3)).permute(2, 0, 1).contiguous()
    batch = frame.unsqueeze(0).repeat(remover.batch_size, 1, 1, 1)

    def one_batch():
        sample = {"image": batch.clone(), "filename": [path] * remover.batch_size}
        remover.process_batch(sample, net, (h, w))
        remover.mask_batch(sample, (h, w))
        torch.cuda.synchronize()
        return sample

    sample = one_batch()  # warm
    sample["mask"][0, 0].numpy().tofile(os.path.join(out_dir, f"u2netfast_mask_{w}x{h}.raw"))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(4):
            one_batch()
        samples.append((time.perf_counter() - start) / (4 * remover.batch_size))
    ms = statistics.median(samples) * 1000.0
    result["frames"][size] = {"ms_per_image": ms, "images_per_s": 1000.0 / ms}
print(json.dumps(result))
