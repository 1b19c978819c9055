"""A node lost in the middle of a run: the job still completes, every output once."""

from __future__ import annotations

import threading
import time

from conftest import LocalCluster, load, make_photos, max_diff, run_folder_tool
from test_ray import manifest_rows

from u2netmatte.ray import MANIFEST_NAME, run_job


def test_a_node_removed_mid_run_the_job_completes_every_output_once(tmp_path):
    src, ref, out = tmp_path / "in", tmp_path / "ref", tmp_path / "out"
    make_photos(src, 16)
    run_folder_tool(src, ref)
    cluster = LocalCluster(workers=2)
    try:
        done: dict[str, object] = {}

        def job() -> None:
            try:
                done["summary"] = run_job(
                    [str(src)], str(out), actors=2, threads=1, batch_size=1, mode="mask"
                )
            except BaseException as e:  # reported by the assertion below
                done["error"] = e

        runner = threading.Thread(target=job)
        runner.start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 3:
            time.sleep(0.2)
        written_before = len(list(out.glob("*.png")))
        assert 3 <= written_before < 16, written_before
        # Each worker node holds one of the two actors (one CPU each).
        victim, survivor = cluster.workers
        cluster.cluster.remove_node(victim, allow_graceful=False)
        runner.join(300)
        assert not runner.is_alive(), "the job did not finish"
        assert "error" not in done, done.get("error")
    finally:
        cluster.shutdown()
    names = sorted(p.name for p in src.glob("*.png"))
    assert sorted(p.name for p in out.iterdir() if p.name != MANIFEST_NAME) == names
    rows = manifest_rows((out / MANIFEST_NAME).read_text())
    assert sorted(r["input"].rsplit("/", 1)[1] for r in rows) == names  # each input once
    assert {r["status"] for r in rows} == {"ok"}
    # The lost node's actor stopped; the other one went on (the victim may
    # still have finished a frame or two between the count and its removal).
    by_survivor = sum(1 for r in rows if r["node"] == survivor.node_id)
    assert by_survivor >= 1, (by_survivor, written_before)
    assert {r["node"] for r in rows} <= {victim.node_id, survivor.node_id}
    for name in names:
        assert max_diff(load(out / name), load(ref / name)) <= 1, name
