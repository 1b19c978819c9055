"""Shared fixtures: test photos, the folder tool's reference masks, a local Ray cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Object-store tests talk only to a server on 127.0.0.1: fake credentials,
# and no lookup of instance metadata (which would go to the network).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CHECKOUT = Path(__file__).resolve().parents[2]
PHOTOS = CHECKOUT / ".deps" / "photos"
# Sizes (width, height) cut from the demo photos: odd widths (rows padded
# to 4 bytes in GStreamer), tall and wide, small enough for a quick run.
SIZES = [(160, 120), (121, 97), (97, 161), (203, 150), (64, 64), (250, 110), (133, 133), (180, 101)]


def folder_tool() -> Path:
    """The folder tool built beside the plugin the package loads (`cargo build` makes both)."""
    from u2netmatte._gst import checkout_plugin_dir

    dirs = [Path(p) for p in os.environ.get("GST_PLUGIN_PATH", "").split(os.pathsep) if p]
    found = checkout_plugin_dir()
    if found is not None:
        dirs.append(found)
    for d in dirs:
        if (d / "u2netmatte").is_file() and (d / "libgstu2netmatte.so").is_file():
            return d / "u2netmatte"
    raise RuntimeError(f"no folder tool (u2netmatte) beside a plugin in {dirs}: run cargo build first")


def make_photos(folder: Path, count: int, sizes: list[tuple[int, int]] = SIZES) -> list[Path]:
    """`count` PNGs cropped and resized from the demo photos, of varied sizes."""
    sources = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg"))
    assert sources, f"no demo photos in {PHOTOS}: run make setup"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            # A different crop each time, so that copies of one photo differ.
            k = i // len(sources)
            box = (k * w // 16, k * h // 16, w - k * w // 20, h)
            size = sizes[i % len(sizes)]
            path = folder / f"photo{i:03d}.png"
            im.crop(box).resize(size, Image.Resampling.LANCZOS).save(path)
            out.append(path)
    return out


def run_folder_tool(inputs: Path, output: Path, mode: str = "mask", threads: int = 1) -> None:
    subprocess.run(
        [str(folder_tool()), str(inputs), "-o", str(output), "--mode", mode, "--threads", str(threads)],
        check=True,
        capture_output=True,
        timeout=300,
    )


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_photos(folder, 8)
    return folder


@pytest.fixture(scope="session")
def reference_masks(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The folder tool's masks of `photos`, by file name."""
    out = tmp_path_factory.mktemp("reference")
    run_folder_tool(photos, out)
    masks = {p.name: load(p) for p in sorted(out.glob("*.png"))}
    assert len(masks) == len(list(photos.glob("*.png")))
    return masks


class LocalCluster:
    """A Ray cluster of real processes on this machine: a head that takes no
    actors (no CPUs) and worker nodes of one CPU each, so that a pool of one
    actor a CPU puts exactly one actor on each node."""

    def __init__(self, workers: int) -> None:
        import ray
        from ray.cluster_utils import Cluster

        store = 256 * 1024 * 1024
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "object_store_memory": store, "include_dashboard": False},
        )
        self.workers = [self.add_worker() for _ in range(workers)]
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address)
        self.address = self.cluster.address

    def add_worker(self):  # noqa: ANN201 (ray's private Node type)
        return self.cluster.add_node(num_cpus=1, object_store_memory=256 * 1024 * 1024)

    def worker_ids(self) -> set[str]:
        return {node.node_id for node in self.workers}

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(workers=2)
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    return out
