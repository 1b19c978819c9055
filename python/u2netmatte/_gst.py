"""GStreamer set-up shared by the package: finding the plugin, one Gst.init."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstApp, GstVideo  # noqa: E402

__all__ = ["Gst", "GstApp", "GstVideo", "checkout_plugin_dir", "init"]

PLUGIN_FILE = "libgstu2netmatte.so"
_init_lock = threading.Lock()


def _checkout_root() -> Path | None:
    """The u2netmatte checkout this package lies in (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    cargo = root / "Cargo.toml"
    try:
        if 'name = "u2netmatte"' in cargo.read_text(encoding="utf-8"):
            return root
    except OSError:
        pass
    return None


def checkout_plugin_dir() -> Path | None:
    """The folder of the plugin built in this package's checkout, the newest build first.

    Looks in `$CARGO_TARGET_DIR` (when set) and the checkout's `target/`,
    release and debug, and takes the most recently built plugin: the one the
    developer just made. None outside a checkout or before a build.
    """
    root = _checkout_root()
    if root is None:
        return None
    targets = [root / "target"]
    if os.environ.get("CARGO_TARGET_DIR"):
        targets.insert(0, Path(os.environ["CARGO_TARGET_DIR"]))
    found = [t / p / PLUGIN_FILE for t in targets for p in ("release", "debug")]
    found = [f for f in found if f.is_file()]
    if not found:
        return None
    return max(found, key=lambda f: f.stat().st_mtime).parent


def init() -> None:
    """Initialises GStreamer once per process, finding the plugin with nothing set.

    A `GST_PLUGIN_PATH` that already names a folder with the plugin is left
    as it is; otherwise the plugin built in this checkout is appended to it
    (after the user's folders). Without either, GStreamer's own paths (where
    `make install` puts the plugin) are searched.
    """
    with _init_lock:
        if Gst.is_initialized():
            return
        user_path = os.environ.get("GST_PLUGIN_PATH", "")
        plugin_dir = checkout_plugin_dir()
        if plugin_dir is not None and not _path_has_plugin(user_path):
            parts = [p for p in user_path.split(os.pathsep) if p] + [str(plugin_dir)]
            os.environ["GST_PLUGIN_PATH"] = os.pathsep.join(parts)
        Gst.init(None)


def _path_has_plugin(search_path: str) -> bool:
    """Whether a folder of a GST_PLUGIN_PATH value already holds a u2netmatte plugin."""
    return any((Path(p) / PLUGIN_FILE).is_file() for p in search_path.split(os.pathsep) if p)
