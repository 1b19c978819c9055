#!/usr/bin/env python3
"""The CPU's runtimes side by side, in one run: the bare session (320x320
tensors, batch 1) and the element (videotestsrc-like photo frames through
appsrc ! u2netmatte mode=composite batch-size=4 ! fakesink) at 1080p and 4K,
on ONNX Runtime's plain CPU provider (fp32) and on OpenVINO (fp32, bf16).
The element's ms a frame are its steady rate (after its first batch, as the
bare session leaves out its first run), against its own bare session at the
same batch (4); its first output's time (start-up) is given beside it.

A process holds one ONNX Runtime, so each configuration runs in a process of
its own (benches/throughput.rs with BENCH_SUMMARY=1); the configurations take
turns, ROUNDS times (default 3), and each figure is the median over rounds.
Ratios are against the plain CPU's bare session measured in the same round.
Part of `make bench`; run alone with `python3 bench/cpu_providers.py`.
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
CONFIGS = [
    ("plain CPU, fp32", {"BENCH_PROVIDER": "cpu", "BENCH_PRECISION": "fp32"}),
    ("OpenVINO, fp32", {"BENCH_PROVIDER": "openvino", "BENCH_PRECISION": "fp32"}),
    ("OpenVINO, bf16", {"BENCH_PROVIDER": "openvino", "BENCH_PRECISION": "bf16"}),
]


def run(extra: dict) -> dict:
    env = dict(os.environ, BENCH_SUMMARY="1", **extra)
    env.pop("ORT_DYLIB_PATH", None)
    out = subprocess.run(
        ["cargo", "bench", "-q", "--bench", "throughput"],
        cwd=TOP, env=env, check=True, capture_output=True, text=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("summary "))
    return json.loads(line[len("summary "):])


def cpu_flags() -> str:
    flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    model = next(l for l in open("/proc/cpuinfo") if l.startswith("model name")).split(":")[1]
    have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni") if f in flags]
    return f"{model.strip()}, {os.cpu_count()} CPUs: {' '.join(have)}"


def main() -> None:
    rounds = int(os.environ.get("ROUNDS", "3"))
    results = {name: [] for name, _ in CONFIGS}
    for r in range(rounds):
        for name, extra in CONFIGS:
            results[name].append(run(extra))
            print(f"round {r + 1}/{rounds}: {name} done", file=sys.stderr)
    plain = results[CONFIGS[0][0]]
    print(f"# CPU runtimes, U2NetP, median of {rounds} interleaved rounds\n")
    print(cpu_flags() + "\n")
    print("| runtime | runs on | bare 320x320 ms | bare / plain bare | element 1080p ms "
          "| own bare ms / element ms | vs plain bare | first output ms | element 4K ms "
          "| own bare ms / element ms | vs plain bare | first output ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, _ in CONFIGS:
        rows = results[name]
        med = lambda f: statistics.median(f(i, row) for i, row in enumerate(rows))
        cells = [name, rows[0]["provider"], f"{med(lambda i, r: r['bare_ms']):.1f}",
                 f"{med(lambda i, r: r['bare_ms'] / plain[i]['bare_ms']):.3f}"]
        for res in ("1080p", "4K"):
            cells += [
                f"{med(lambda i, r: r[res]['element_ms']):.1f}",
                f"{med(lambda i, r: r[res]['bare_ms'] / r[res]['element_ms']):.3f}",
                f"{med(lambda i, r: plain[i][res]['bare_ms'] / r[res]['element_ms']):.2f}x",
                f"{med(lambda i, r: r[res]['first_ms']):.0f}",
            ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
