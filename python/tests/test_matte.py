"""`Matte` against the folder tool, on several sizes; errors raise with the element's message."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import load, max_diff

from u2netmatte import Matte, MatteError
from u2netmatte._gst import Gst


def frames_of(photos: Path) -> dict[str, np.ndarray]:
    return {p.name: load(p) for p in sorted(photos.glob("*.png"))}


def test_masks_of_several_sizes_equal_the_folder_tools(photos, reference_masks):
    frames = frames_of(photos)
    assert len({f.shape for f in frames.values()}) == len(frames)  # every size differs
    with Matte(mode="mask", batch_size=3, threads=1) as matte:
        outputs = matte.run(list(frames.values()))
    assert len(outputs) == len(frames)
    for (name, frame), mask in zip(frames.items(), outputs, strict=True):
        assert mask.dtype == np.uint8
        assert mask.shape == frame.shape[:2], name
        assert max_diff(mask, reference_masks[name]) <= 1, name


def test_cutouts_keep_the_colours_and_take_the_mask_as_alpha(photos, reference_masks):
    frames = frames_of(photos)
    names = list(frames)[:3]
    with Matte(mode="alpha", threads=1) as matte:
        # RGB, RGBA and gray inputs in one run.
        rgba = np.dstack([frames[names[1]], np.full(frames[names[1]].shape[:2], 255, np.uint8)])
        gray = frames[names[2]][:, :, 1].copy()
        outputs = matte.run([frames[names[0]], rgba, gray])
    assert [o.shape for o in outputs] == [(*frames[n].shape[:2], 4) for n in names]
    assert np.array_equal(outputs[0][:, :, :3], frames[names[0]])
    assert np.array_equal(outputs[1][:, :, :3], frames[names[1]])
    assert np.array_equal(outputs[2][:, :, 0], gray)
    for name, out in zip(names[:2], outputs[:2], strict=True):
        assert max_diff(out[:, :, 3], reference_masks[name]) <= 1, name


def test_runs_in_a_row_and_from_another_thread(photos, reference_masks):
    import threading

    frames = frames_of(photos)
    names = list(frames)[:2]
    matte = Matte(mode="mask", batch_size=4, threads=1)
    got: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: got.extend(matte.run([frames[names[0]]])))
    worker.start()
    worker.join(120)
    got.extend(matte.run([frames[names[1]]]))
    matte.close()
    assert len(got) == 2
    assert all(max_diff(g, reference_masks[n]) <= 1 for g, n in zip(got, names, strict=True))


def test_a_model_that_does_not_exist_raises_the_elements_message():
    start = time.monotonic()
    with pytest.raises(MatteError, match=r"^u2netmatte: model file /nonexistent/model\.onnx does not exist"):
        Matte(model="/nonexistent/model.onnx")
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "props, message",
    [
        ({"mode": "cutout"}, r"invalid mode 'cutout': one of composite, mask, alpha, blur"),
        ({"batch_size": 0}, r"invalid batch-size 0: 1\.\.64"),
        ({"no_such_property": 1}, r"u2netmatte has no property 'no-such-property'"),
        ({"threshold": "high"}, r"invalid threshold 'high'"),
    ],
)
def test_bad_properties_are_refused_by_name(props, message):
    with pytest.raises(MatteError, match=message):
        Matte(**props)


def test_an_error_while_running_raises_instead_of_hanging(photos):
    frame = next(iter(frames_of(photos).values()))
    matte = Matte(mode="mask", threads=1, timeout=60)
    # A buffer far smaller than its caps say: the element posts an error.
    caps = Gst.Caps.from_string("video/x-raw,format=RGBA,width=640,height=480,framerate=0/1")
    buffer = Gst.Buffer.new_wrapped(b"\0" * 100)
    buffer.pts = 0
    matte._src.push_sample(Gst.Sample.new(buffer, caps, None, None))
    start = time.monotonic()
    with pytest.raises(MatteError, match=r"^u2netmatte: .*(smaller|size)"):
        matte._pull(0)
    assert time.monotonic() - start < 30
    # The failure sticks: the next run says the same at once.
    with pytest.raises(MatteError, match=r"^u2netmatte: "):
        matte.run([frame])
    assert matte.closed


def test_a_run_inside_a_run_raises_instead_of_waiting(photos):
    frame = next(iter(frames_of(photos).values()))
    with Matte(mode="mask", batch_size=1, threads=1) as matte:
        outer = matte.iter([frame, frame])
        first = next(outer)
        with pytest.raises(MatteError, match="already running"):
            matte.run([frame])
        rest = list(outer)
        assert [o.shape for o in [first, *rest]] == [frame.shape[:2]] * 2
        # Once the first run is over, the next one runs.
        assert matte.run([frame])[0].shape == frame.shape[:2]


def test_the_context_manager_closes_the_pipeline(photos):
    frame = next(iter(frames_of(photos).values()))
    with Matte(mode="mask", threads=1) as matte:
        assert len(matte.run([frame])) == 1
    assert matte.closed
    assert matte.element.get_state(0).state == Gst.State.NULL
    with pytest.raises(MatteError, match="closed"):
        matte.run([frame])


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_frames_are_refused(frame, message):
    with Matte(mode="mask", threads=1) as matte:
        with pytest.raises(MatteError, match=message):
            matte.run([frame])


def test_the_plugin_is_found_with_no_gst_plugin_path(tmp_path):
    """With GST_PLUGIN_PATH unset, the package finds the build of its checkout
    (target/ or $CARGO_TARGET_DIR, the newest of release and debug)."""
    import os
    import subprocess
    import sys

    from conftest import folder_tool

    target = folder_tool().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "GST_PLUGIN_PATH"}
    env["CARGO_TARGET_DIR"] = str(target)
    code = (
        "import numpy as np, os; from u2netmatte import Matte\n"
        "with Matte(mode='mask', threads=1) as m: out = m.run([np.zeros((8, 8, 3), np.uint8)])\n"
        "print(out[0].shape, os.environ['GST_PLUGIN_PATH'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    shape, path = result.stdout.split(") ")
    assert shape == "(8, 8"
    assert path.strip() in (str(target / "debug"), str(target / "release"))


def test_a_bad_frame_mid_run_leaves_the_next_run_its_own_outputs(photos, reference_masks):
    frames = frames_of(photos)
    first, second = list(frames)[:2]
    with Matte(mode="mask", threads=1) as matte:
        with pytest.raises(MatteError, match="uint8"):
            matte.run([frames[first], np.zeros((4, 4, 3), np.float64)])
        (mask,) = matte.run([frames[second]])
    assert max_diff(mask, reference_masks[second]) <= 1
