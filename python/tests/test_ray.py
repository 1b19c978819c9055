"""The Ray job on a real local cluster (two nodes, one actor each), from folders and S3."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load, make_photos, max_diff

from u2netmatte.ray import MANIFEST_NAME, MatteBatch, Store, run_job


def manifest_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_two_nodes_one_actor_each_write_every_input_once(cluster, photos, reference_masks, clean_dir):
    summary = run_job([str(photos)], str(clean_dir), actors=2, threads=1, batch_size=1, mode="mask")
    inputs = sorted(p.name for p in photos.glob("*.png"))
    written = sorted(p.name for p in clean_dir.iterdir() if p.name != MANIFEST_NAME)
    assert written == inputs
    for name in inputs:
        assert max_diff(load(clean_dir / name), reference_masks[name]) <= 1, name
    rows = manifest_rows((clean_dir / MANIFEST_NAME).read_text())
    assert sorted(Path(r["input"]).name for r in rows) == inputs  # each input once
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["output"] == str(clean_dir / Path(r["input"]).name) for r in rows)
    assert {r["node"] for r in rows} == cluster.worker_ids()  # both nodes did work
    assert (summary.written, summary.skipped, summary.failed) == (len(inputs), 0, 0)


def test_matte_batch_in_a_users_own_pipeline(cluster, photos, reference_masks):
    import ray

    names = sorted(p.name for p in photos.glob("*.png"))[:4]
    items = [{"name": n, "image": load(photos / n)} for n in names]
    ds = ray.data.from_items(items).map_batches(
        MatteBatch,
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=2,
        num_cpus=1,
        fn_constructor_kwargs={"mode": "mask", "threads": 1},
    )
    out = {row["name"]: row["matte"] for row in ds.take_all()}
    assert sorted(out) == names
    for name in names:
        assert max_diff(np.asarray(out[name]), reference_masks[name]) <= 1, name


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "u2netmatte.ray", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_bad_inputs_are_in_the_manifest_and_a_rerun_does_only_what_is_missing(cluster, tmp_path):
    src = tmp_path / "in"
    make_photos(src / "sub", 3)
    (src / "notes.png").write_text("not an image")
    os.symlink(tmp_path / "deleted.jpg", src / "gone.jpg")  # listed, but cannot be read
    out = tmp_path / "out"
    # Relative paths: the actors, in folders of their own, get absolute ones.
    args = ["in", "-o", "out", "--address", cluster.address, "--actors", "2", "--mode", "mask"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert f"failed: {src / 'notes.png'}: not an image" in first.stderr
    assert f"failed: {src / 'gone.jpg'}: cannot read" in first.stderr
    assert "3 written, 0 already there, 2 failed" in first.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["sub/photo000.png", "sub/photo001.png", "sub/photo002.png"]
    rows = {r["input"]: r for r in manifest_rows((out / MANIFEST_NAME).read_text())}
    assert len(rows) == 5
    assert rows[str(src / "notes.png")]["status"] == "error"
    assert rows[str(src / "notes.png")]["output"] == str(out / "notes.png")
    assert rows[str(src / "gone.jpg")]["status"] == "error"
    assert [rows[str(src / f"sub/photo00{i}.png")]["status"] for i in range(3)] == ["ok"] * 3

    kept = out / "sub/photo000.png"
    stamp = kept.stat().st_mtime_ns
    (out / "sub/photo001.png").unlink()
    second = cli(*args, "--skip-existing", cwd=tmp_path)
    assert second.returncode == 1, second.stderr
    assert "1 written, 2 already there, 2 failed" in second.stderr
    assert kept.stat().st_mtime_ns == stamp  # not redone
    assert (out / "sub/photo001.png").is_file()
    again = {r["input"]: r for r in manifest_rows((out / MANIFEST_NAME).read_text())}
    assert len(again) == 5
    assert again[str(src / "sub/photo000.png")]["node"] == rows[str(src / "sub/photo000.png")]["node"]


def test_the_output_folder_may_not_be_inside_an_input(tmp_path):
    make_photos(tmp_path / "in", 1)
    result = cli(str(tmp_path / "in"), "-o", str(tmp_path / "in" / "out"))
    assert result.returncode == 2
    assert "is inside the input" in result.stderr


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_the_same_job_from_and_to_an_s3_server(cluster, photos, reference_masks, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="photos")
    names = sorted(p.name for p in photos.glob("*.png"))
    for name in names:
        s3.upload_file(str(photos / name), "photos", f"in/batch/{name}")
    summary = run_job(
        ["s3://photos/in"],
        "s3://photos/out",
        store=Store(endpoint_url=s3_server),
        actors=2,
        threads=1,
        batch_size=2,
        mode="mask",
    )
    assert summary.failed == 0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="photos", Prefix="out/")["Contents"])
    assert keys == sorted([f"out/batch/{n}" for n in names] + [f"out/{MANIFEST_NAME}"])
    for name in names:
        body = s3.get_object(Bucket="photos", Key=f"out/batch/{name}")["Body"].read()
        from PIL import Image

        assert max_diff(np.asarray(Image.open(io.BytesIO(body))), reference_masks[name]) <= 1, name
    text = s3.get_object(Bucket="photos", Key=f"out/{MANIFEST_NAME}")["Body"].read().decode()
    rows = manifest_rows(text)
    assert sorted(r["input"] for r in rows) == [f"s3://photos/in/batch/{n}" for n in names]
    assert {r["output"] for r in rows} == {f"s3://photos/out/batch/{n}" for n in names}
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["node"] for r in rows} == cluster.worker_ids()


def test_outputs_keep_relative_names_as_the_folder_tool_names_clashes():
    from u2netmatte.ray import output_names

    names = output_names(["a.jpg", "a.png", "a.webp", "sub/a.png", "sub/b.tiff"])
    assert names == ["a.png", "a.png.png", "a.webp.png", "sub/a.png", "sub/b.png"]


def test_an_output_that_cannot_be_written_fails_its_row_alone(cluster, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    make_photos(src / "sub", 1)
    make_photos(src, 2)
    out.mkdir()
    (out / "sub").write_text("a file where the output's folder should be")
    summary = run_job([str(src)], str(out), actors=2, threads=1, batch_size=1, mode="mask")
    rows = {Path(r["input"]).relative_to(src).as_posix(): r for r in summary.rows}
    assert rows["sub/photo000.png"]["status"] == "error"
    assert rows["sub/photo000.png"]["error"].startswith("cannot write: "), rows["sub/photo000.png"]
    assert [rows[f"photo00{i}.png"]["status"] for i in range(2)] == ["ok", "ok"]
    assert (summary.written, summary.failed) == (2, 1)
    assert sorted(p.name for p in out.glob("*.png")) == ["photo000.png", "photo001.png"]
