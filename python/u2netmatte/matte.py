"""`Matte`: the u2netmatte element on numpy arrays (appsrc ! u2netmatte ! appsink)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ._gst import Gst, GstVideo, init

__all__ = ["Matte", "MatteError", "MODES"]

MODES = ("alpha", "composite", "mask", "blur")
_POLL_NS = 100 * Gst.MSECOND
# Timestamps only keep frames apart and in order; any steady step does.
_FRAME_NS = Gst.SECOND // 30


class MatteError(RuntimeError):
    """The pipeline failed: the message is the element's own (or says what timed out).

    `debug` holds GStreamer's debug text for the error, when there is one.
    """

    def __init__(self, message: str, debug: str | None = None) -> None:
        super().__init__(message)
        self.debug = debug


class Matte:
    """Background removal on numpy arrays, through one `u2netmatte` element.

    The pipeline (`appsrc ! u2netmatte ! appsink`) is built and the model
    loaded once, here; each `run` then pushes frames of any sizes and returns
    one output per frame, in order. No GLib main loop is needed: the caller's
    thread pushes and pulls, and the bus is read for errors between pulls, so
    an error raises `MatteError` with the element's message instead of
    hanging. One run at a time: a run begun while another is under way (on
    any thread) raises `MatteError`.

    Args:
        mode: `alpha` (RGBA cut-out, the folder tool's default), `composite`,
            `mask` (one channel) or `blur`.
        model: an `.onnx` path or a model name (`u2netp`, `u2net`, ...).
        batch_size: frames per inference run.
        threads: threads inference computes on; 0: one a core.
        timeout: seconds to wait for one output before giving up.
        **element_properties: any other property of the element, with `_` for
            `-` (`fill_color=0xff00ff00`, `provider="cpu"`, ...).

    Raises:
        MatteError: the plugin is missing, a property is unknown or out of
            range, or the model cannot load (with the element's message).
    """

    def __init__(
        self,
        mode: str = "alpha",
        model: str = "u2netp",
        batch_size: int = 4,
        threads: int = 0,
        *,
        timeout: float = 600.0,
        **element_properties: Any,
    ) -> None:
        # Closed until the pipeline exists: __del__ after a failed start has nothing to stop.
        self._closed = True
        init()
        self._lock = threading.Lock()
        self._failure: MatteError | None = None
        self._timeout = timeout
        self._pts = 0
        self._caps: dict[tuple[str, int, int], Gst.Caps] = {}
        self._batch_size = batch_size
        if Gst.ElementFactory.find("u2netmatte") is None:
            raise MatteError(
                "the u2netmatte GStreamer plugin is not found: build it (make build) "
                "or install it (make install), or set GST_PLUGIN_PATH to its folder"
            )
        self._pipeline = Gst.Pipeline.new(None)
        self._closed = False
        self._src = Gst.ElementFactory.make("appsrc", None)
        self.element = Gst.ElementFactory.make("u2netmatte", "u2netmatte")
        self._sink = Gst.ElementFactory.make("appsink", None)
        # Unbounded appsrc queue: `iter` bounds what is in flight itself, and a
        # bounded one would block the only thread that also pulls.
        self._src.set_property("format", Gst.Format.TIME)
        self._src.set_property("max-bytes", 0)
        self._src.set_property("block", False)
        self._sink.set_property("sync", False)
        self._sink.set_property("max-buffers", 0)
        props: dict[str, Any] = {"mode": mode, "model": model, "batch_size": batch_size}
        props["threads"] = threads
        props.update(element_properties)
        for name, value in props.items():
            _set_property(self.element, name.replace("_", "-"), value)
        for element in (self._src, self.element, self._sink):
            self._pipeline.add(element)
        self._src.link(self.element)
        self.element.link(self._sink)
        self._bus = self._pipeline.get_bus()
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            error = self._bus_error(0) or MatteError("the pipeline could not start")
            self.close()
            raise error

    def __enter__(self) -> Matte:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    @property
    def closed(self) -> bool:
        """Whether `close` ran (or the pipeline never started)."""
        return self._closed

    def close(self) -> None:
        """Stops the pipeline and frees the model; later runs raise `MatteError`."""
        if self._closed:
            return
        self._closed = True
        self._pipeline.set_state(Gst.State.NULL)

    def run(self, frames: Iterable[np.ndarray]) -> list[np.ndarray]:
        """The outputs of `frames`, one each, in order.

        Each frame is a uint8 array, HxWx3 (RGB), HxWx4 (RGBA) or HxW (gray);
        sizes may differ from frame to frame. Outputs have the frame's size:
        HxW uint8 in `mask` mode, HxWx4 RGBA uint8 otherwise.
        """
        return list(self.iter(frames))

    def iter(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Like `run`, yielding each output as it comes, with a bounded number in flight."""
        # Not waiting: a second run on this thread (inside a half-consumed
        # iteration) would wait for ever.
        if not self._lock.acquire(blocking=False):
            raise MatteError("this Matte is already running (one run at a time)")
        try:
            self._check_usable()
            window = 2 * self._batch_size + 2
            pending: deque[int] = deque()
            try:
                for frame in frames:
                    while len(pending) >= window:
                        yield self._pull(pending.popleft())
                    pending.append(self._push(frame))
                while pending:
                    yield self._pull(pending.popleft())
            finally:
                # An iteration left early (a bad frame, a caller that stops)
                # leaves frames in the pipeline: take them out, so that the
                # next run gets its own outputs.
                while pending and self._failure is None and not self._closed:
                    self._pull(pending.popleft())
        finally:
            self._lock.release()

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise MatteError("this Matte is closed")

    def _push(self, frame: np.ndarray) -> int:
        data, fmt, width, height = _pack(frame)
        key = (fmt, width, height)
        caps = self._caps.get(key)
        if caps is None:
            caps = Gst.Caps.from_string(
                f"video/x-raw,format={fmt},width={width},height={height},framerate=0/1"
            )
            self._caps[key] = caps
        buffer = Gst.Buffer.new_wrapped(data)
        pts = self._pts
        self._pts += _FRAME_NS
        buffer.pts = pts
        buffer.duration = _FRAME_NS
        result = self._src.push_sample(Gst.Sample.new(buffer, caps, None, None))
        if result != Gst.FlowReturn.OK:
            self._fail(self._bus_error(0) or MatteError(f"appsrc refused a frame: {result.value_nick}"))
        return pts

    def _pull(self, pts: int) -> np.ndarray:
        deadline = time.monotonic() + self._timeout
        while True:
            sample = self._sink.try_pull_sample(_POLL_NS)
            if sample is not None:
                buffer = sample.get_buffer()
                if buffer.pts != pts:
                    self._fail(MatteError(f"output out of order: pts {buffer.pts}, expected {pts}"))
                return _unpack(sample)
            error = self._bus_error(0)
            if error is not None:
                self._fail(error)
            if self._sink.is_eos():
                self._fail(MatteError("the pipeline ended before every frame came out"))
            if time.monotonic() > deadline:
                self._fail(MatteError(f"no output within {self._timeout:g} s"))

    def _fail(self, error: MatteError) -> None:
        self._failure = error
        self.close()
        raise error

    def _bus_error(self, timeout_ns: int) -> MatteError | None:
        message = self._bus.timed_pop_filtered(timeout_ns, Gst.MessageType.ERROR)
        if message is None:
            return None
        err, debug = message.parse_error()
        name = message.src.get_name() if message.src is not None else "pipeline"
        return MatteError(f"{name}: {err.message}", debug)


def _set_property(element: Gst.Element, name: str, value: Any) -> None:
    """Sets one property, refusing unknown names and values the element would not take."""
    pspec = element.find_property(name)
    if pspec is None:
        raise MatteError(f"u2netmatte has no property '{name}'")
    if isinstance(value, str) and hasattr(pspec, "enum_class"):
        Gst.util_set_object_arg(element, name, value)
        now = element.get_property(name)
        if getattr(now, "value_nick", None) != value:
            choices = ", ".join(v.value_nick for v in pspec.enum_class.__enum_values__.values())
            raise MatteError(f"invalid {name} '{value}': one of {choices}")
        return
    bounded = hasattr(pspec, "minimum") and hasattr(pspec, "maximum")
    if bounded and isinstance(value, (int, float)) and not pspec.minimum <= value <= pspec.maximum:
        raise MatteError(f"invalid {name} {value!r}: {pspec.minimum}..{pspec.maximum}")
    try:
        element.set_property(name, value)
    except (TypeError, ValueError, OverflowError) as e:
        raise MatteError(f"invalid {name} {value!r}: {e}") from e
    if element.get_property(name) != value:
        raise MatteError(f"invalid {name} {value!r}")


def _pack(frame: np.ndarray) -> tuple[bytes, str, int, int]:
    """A frame's bytes at GStreamer's default stride (rows padded to 4 bytes)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise MatteError(f"frames must be uint8 numpy arrays, got {getattr(frame, 'dtype', type(frame))}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise MatteError(f"frames must be HxWx3, HxWx4 or HxW, got shape {frame.shape}")
    height, width, channels = frame.shape
    if height == 0 or width == 0:
        raise MatteError(f"empty frame of shape {frame.shape}")
    fmt = "RGB" if channels == 3 else "RGBA"
    row = width * channels
    stride = (row + 3) & ~3
    if stride != row:
        padded = np.zeros((height, stride), np.uint8)
        padded[:, :row] = frame.reshape(height, row)
        return padded.tobytes(), fmt, width, height
    return np.ascontiguousarray(frame).tobytes(), fmt, width, height


def _unpack(sample: Gst.Sample) -> np.ndarray:
    """An output sample as an array of its own (its stride removed)."""
    info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
    buffer = sample.get_buffer()
    meta = GstVideo.buffer_get_video_meta(buffer)
    stride = meta.stride[0] if meta is not None else info.stride[0]
    offset = meta.offset[0] if meta is not None else info.offset[0]
    width, height = info.width, info.height
    # The element gives GRAY8 (mask mode) or RGBA.
    channels = 1 if info.finfo.format == GstVideo.VideoFormat.GRAY8 else 4
    ok, mapped = buffer.map(Gst.MapFlags.READ)
    if not ok:
        raise MatteError("an output buffer could not be read")
    try:
        rows = np.frombuffer(
            mapped.data, np.uint8, count=stride * (height - 1) + width * channels, offset=offset
        )
        plane = np.lib.stride_tricks.as_strided(rows, (height, width * channels), (stride, 1))
        out = np.array(plane)
    finally:
        buffer.unmap(mapped)
    return out if channels == 1 else out.reshape(height, width, channels)
