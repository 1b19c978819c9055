#!/usr/bin/env python3
"""The Ray job against itself and against the folder tool (`make bench-ray`; not a test).

On a local Ray cluster (a head that takes no actors, two worker nodes of one
CPU each), at --threads 1, on >= 64 photos made from .deps/photos:
  - two nodes with one actor each against one actor,
  - one actor against the folder tool (same build, same threads, batch size, mode).
Warm-up excluded: each configuration runs on the first 16 photos and on all
of them, and its rate is the difference of photos over the difference of
wall times, so that process start, actor start and model loading cancel
out, for the job and the folder tool alike. Median of the rounds.

A node of one CPU is one core: each worker node (its raylet, and the
workers and actors it starts, which inherit it) is pinned to a core of its
own with the scheduler's affinity, as a machine of one core would hold it,
and the folder tool runs pinned to one core too. Without pinning, one actor
or the folder tool would also use the other core for everything around the
model (decoding, resizing, compositing, encoding), and "two nodes" would
share the same two cores: that measures this machine, not scaling out.
`--no-pin` measures that instead. The head and the driver are not pinned.

    .deps/ray-venv/bin/python bench/ray_bench.py [--photos 64] [--rounds 3]

BENCH_BUILD_DIR picks the build (default target/release): its plugin and its
folder tool are the ones compared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("BENCH_BUILD_DIR", CHECKOUT / "target" / "release")).resolve()
# Before the package initialises GStreamer: this build's plugin, nothing else.
os.environ["GST_PLUGIN_PATH"] = str(BUILD)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from PIL import Image  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from u2netmatte.ray import MANIFEST_NAME, run_job  # noqa: E402

# Photo-like sizes (width, height), a few of each orientation.
SMALL = 16
SIZES = [(640, 480), (800, 600), (480, 640), (720, 540), (600, 600), (960, 540), (540, 720), (512, 384)]


def make_photos(folder: Path, count: int) -> None:
    sources = sorted(p for p in (CHECKOUT / ".deps" / "photos").iterdir() if p.suffix in (".png", ".jpg"))
    if not sources:
        sys.exit("no photos in .deps/photos: run make setup")
    folder.mkdir(parents=True)
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            k = (i // len(sources)) % 8
            box = (k * w // 32, k * h // 32, w - k * w // 40, h - k * h // 48)
            im.crop(box).resize(SIZES[i % len(SIZES)], Image.Resampling.LANCZOS).save(
                folder / f"p{i:03d}.png"
            )


def count_outputs(out: Path) -> int:
    return sum(1 for p in out.rglob("*.png") if p.name != MANIFEST_NAME)


def folder_tool(src: Path, out: Path, batch: int, core: int | None) -> float:
    tool = BUILD / "u2netmatte"
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    start = time.monotonic()
    subprocess.run(
        [str(tool), str(src), "-o", str(out), "--threads", "1", "-b", str(batch)], check=True, preexec_fn=pin
    )
    return time.monotonic() - start


def add_node_on(cluster: Cluster, core: int | None, store: int) -> None:
    """A worker node of one CPU; pinned to `core` (its processes inherit the affinity) unless None."""
    everything = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=store)
    finally:
        os.sched_setaffinity(0, everything)


def ray_job(src: Path, out: Path, actors: int, batch: int) -> float:
    start = time.monotonic()
    summary = run_job([str(src)], str(out), actors=actors, threads=1, batch_size=batch)
    if summary.failed:
        sys.exit(f"{summary.failed} inputs failed")
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--no-pin", action="store_true", help="leave the nodes and the folder tool on every core"
    )
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cores) >= 2
    node_cores = cores[:2] if pinned else [None, None]
    for name in ("libgstu2netmatte.so", "u2netmatte"):
        if not (BUILD / name).is_file():
            sys.exit(f"no {name} in {BUILD}: make build (or set BENCH_BUILD_DIR)")
    if args.photos < 2 * SMALL:
        sys.exit(f"--photos must be at least {2 * SMALL}")
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    store = 256 * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": store, "include_dashboard": False},
    )
    try:
        src, small = work / "in", work / "in-small"
        make_photos(src, args.photos)
        small.mkdir()
        for p in sorted(src.iterdir())[:SMALL]:
            shutil.copy(p, small / p.name)
        for core in node_cores:
            add_node_on(cluster, core, store)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        ray.data.DataContext.get_current().enable_progress_bars = False
        n, b = args.photos, args.batch_size
        runs = {
            "folder tool, --threads 1": lambda inp, out: folder_tool(inp, out, b, node_cores[1]),
            "Ray, one actor (threads 1)": lambda inp, out: ray_job(inp, out, 1, b),
            "Ray, two nodes x one actor (threads 1)": lambda inp, out: ray_job(inp, out, 2, b),
        }
        rates: dict[str, list[float]] = {k: [] for k in runs}
        walls: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for i, (name, run) in enumerate(runs.items()):
                timed = {}
                for inp, count in ((small, SMALL), (src, n)):
                    out = work / f"out-{r}-{i}-{count}"
                    timed[count] = run(inp, out)
                    if count_outputs(out) != count:
                        sys.exit(f"{name}: {count_outputs(out)} outputs of {count}")
                    shutil.rmtree(out)
                walls[name].append(timed[n])
                rates[name].append((n - SMALL) / (timed[n] - timed[SMALL]))
                print(f"round {r + 1}: {name}: {rates[name][-1]:.2f} photos/s", file=sys.stderr)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    tool, one, two = (med[k] for k in runs)
    where = f"each node and the folder tool pinned to one core ({node_cores})" if pinned else "nothing pinned"
    print(
        f"\n{n} photos (512x384 to 960x540), batch {b}, build {BUILD}, median of {args.rounds} rounds, {where}"
    )
    print("| run | photos/s (warm) | wall s, all photos (start-up included) |")
    print("|---|---|---|")
    for k in runs:
        print(f"| {k} | {med[k]:.2f} | {statistics.median(walls[k]):.1f} |")
    print()
    print("| ratio | value | target |")
    print("|---|---|---|")
    print(f"| two nodes / one actor | {two / one:.2f} | >= 1.5 |")
    print(f"| one actor / folder tool | {one / tool:.2f} | >= 0.8 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
