#!/usr/bin/env python3
"""rembg 2.0.86 on the frames the Rust benchmark wrote, with the same
u2netp.onnx: per-frame time of remove() (cut-out) and remove(only_mask=True),
median of several runs, and peak RSS. Prints one JSON object.

    rembg_bench.py MODEL_DIR RUNS FRAME.rgb:WIDTHxHEIGHT [...]

Frames are raw RGB, so rembg and the element start from the same pixels
with no decoding on either side.
"""
import importlib.metadata
import json
import os
import resource
import statistics
import sys
import time

os.environ["U2NET_HOME"] = sys.argv[1]
runs = int(sys.argv[2])

import numpy as np  # noqa: E402
import rembg  # noqa: E402
from PIL import Image  # noqa: E402

session = rembg.new_session("u2netp")
result = {"rembg": importlib.metadata.version("rembg"), "frames": {}}
for spec in sys.argv[3:]:
    path, size = spec.split(":")
    w, h = (int(v) for v in size.split("x"))
    img = Image.frombuffer("RGB", (w, h), np.fromfile(path, dtype=np.uint8), "raw", "RGB", 0, 1)
    rembg.remove(img, session=session)  # warm
    timings = {}
    for name, kwargs in (("cutout", {}), ("mask", {"only_mask": True})):
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            rembg.remove(img, session=session, **kwargs)
            samples.append(time.perf_counter() - start)
        timings[name] = statistics.median(samples) * 1000.0
    result["frames"][size] = timings
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps(result))
