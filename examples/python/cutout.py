#!/usr/bin/env python3
"""u2netmatte from Python (PyGObject), with the installed plugin.

    GST_PLUGIN_PATH=target/release python3 examples/python/cutout.py photo.png cutout.png

(`make install` puts the plugin where GStreamer looks by itself, and then
GST_PLUGIN_PATH is not needed.) Needs python3-gi and gir1.2-gstreamer-1.0.
Prints the element's per-batch figures, which it posts when stats=true.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def main(src: str, dst: str) -> int:
    Gst.init(None)
    if Gst.ElementFactory.find("u2netmatte") is None:
        print("u2netmatte is not installed: run `make install` or set GST_PLUGIN_PATH", file=sys.stderr)
        return 2
    pipeline = Gst.parse_launch(
        f'filesrc location="{src}" ! decodebin ! videoconvert ! '
        "u2netmatte name=matte mode=alpha batch-size=1 stats=true ! "
        f'pngenc ! filesink location="{dst}"'
    )
    matte = pipeline.get_by_name("matte")
    print(f"model={matte.get_property('model')} batch-size={matte.get_property('batch-size')}")
    pipeline.set_state(Gst.State.PLAYING)
    bus = pipeline.get_bus()
    status = 0
    while True:
        msg = bus.timed_pop_filtered(
            60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.ELEMENT
        )
        if msg is None:
            print("timed out", file=sys.stderr)
            status = 1
            break
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print(f"error: {err.message}", file=sys.stderr)
            status = 1
            break
        if msg.type == Gst.MessageType.EOS:
            break
        s = msg.get_structure()
        if s is not None and s.get_name() == "u2netmatte-stats":
            print(
                f"batch of {s.get_value('frames')}: inference {s.get_value('inference-ms'):.1f} ms, "
                f"preparation {s.get_value('prepare-ms'):.1f} ms, compositing {s.get_value('compose-ms'):.1f} ms "
                f"on {s.get_value('provider')}"
            )
    pipeline.set_state(Gst.State.NULL)
    if status == 0:
        print(f"wrote {dst}")
    return status


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
