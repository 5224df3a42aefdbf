"""What live sources (UVC cameras, network streams) share: reconnecting, repeats, one clock.

`LiveSource` runs the read loop of a camera that may come and go. A subclass opens the
device (`_connect`), hands over the next image and when it was captured (`_grab`), and
releases it (`_disconnect`); `LiveSource` does the rest:

- **Loss and reconnection.** When `_grab` reports the device or stream lost, the source
  sets `stats.up = False`, releases it and tries `_connect` again after 0.1, 0.2, 0.4 ...
  up to `RECONNECT_MAX_S` seconds, inside `read()`, so the capture thread simply blocks
  while the main loop carries on with the other camera. With `reconnect: false` a loss is
  a `RuntimeFailure` instead.
- **Repeated frames.** A Lepton sends every frame about three times and a thermal core
  freezes its picture for a fraction of a second during flat-field correction (FFC).
  `RepeatDetector` drops a frame identical to the previous one (counted in
  `stats.duplicates`), and calls a run of repeats longer than the stall limit an FFC stall
  (`stats.ffc_stalls`; `stats.stalled` while it lasts).
- **Backlog.** What a stream sent while nobody read it (between `open()` and the first
  read, or during a reconnect) waits in socket buffers and would come out at once, old but
  stamped as new: such frames are skipped (`stats.backlog`) until one has to be waited for.
- **A stream that comes back different.** Frames keep the size and format the source
  opened with: another size is resized to it (`stats.resized`), another format converted.
- **One clock.** Frames are stamped on the pipeline clock (`frames.now_ns`): the device's
  own timestamp when the backend gives one, mapped by `StreamClock` when it runs on
  another clock, minus the camera's `latency_ms`; times strictly increase.
"""
from __future__ import annotations

import abc
import collections
import threading
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from streamfuse.capture.base import CaptureStats, Source
from streamfuse.capture.replay import to_pixel_format
from streamfuse.config import check_range
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import Frame, now_ns

#: First wait before reconnecting; it doubles after each failed attempt up to the maximum,
#: which bounds how long a stream that has come back waits to be picked up again.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 1.0
#: Stride of the first, cheap comparison of two frames; only equal samples get a full one.
_COMPARE_STRIDE = 7


@dataclass(frozen=True, kw_only=True)
class LiveOptions:
    """Settings every live source type has (its config dataclass derives from this)."""

    #: Known delay between exposure and the frame reaching this process, subtracted from t_ns.
    latency_ms: float = 0.0
    #: Reconnect when the camera or stream is lost (true), or end the run (false).
    reconnect: bool = True
    #: Repeated identical frames: drop (and count) them, keep them, or auto (drop for IR).
    repeats: Literal["auto", "drop", "keep"] = "auto"
    #: A frame repeated for longer than this is a flat-field-correction stall.
    stall_ms: float = 250.0
    #: A live source always runs at its own rate.
    pace: Literal["realtime"] = "realtime"

    def __post_init__(self):
        check_range("latency_ms", self.latency_ms, 0, 5000)
        check_range("stall_ms", self.stall_ms, 10, 10_000)


class RepeatDetector:
    """Tells repeated frames from new ones, and repeat runs that are FFC stalls.

    Args:
        stats: where duplicates, stalls and the `stalled` flag are recorded.
        stall_ns: a frame repeated for longer than this (pipeline-clock ns since the frame
            first arrived) is an FFC stall.
    """

    def __init__(self, stats: CaptureStats, stall_ns: int):
        self.stats = stats
        self.stall_ns = stall_ns
        self._last: np.ndarray | None = None
        self._since_ns = 0

    def is_repeat(self, image: np.ndarray, t_ns: int) -> bool:
        last = self._last
        if last is not None and _same(last, image):
            self.stats.duplicates += 1
            if not self.stats.stalled and t_ns - self._since_ns > self.stall_ns:
                self.stats.stalled = True
                self.stats.ffc_stalls += 1
            return True
        self._last, self._since_ns = image, t_ns
        self.stats.stalled = False
        return False

    def reset(self) -> None:
        self._last = None
        self.stats.stalled = False


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    s = _COMPARE_STRIDE
    return a.shape == b.shape and np.array_equal(a[::s, ::s], b[::s, ::s]) and np.array_equal(a, b)


def _pixel_format_of(image: np.ndarray) -> str:
    if image.ndim == 3:
        return "bgr24"
    return "gray16" if image.dtype == np.uint16 else "gray8"


class StreamClock:
    """Maps a stream's own timestamps (pts, seconds) onto the pipeline clock.

    A frame arrives some delay after the time its pts names: a fixed part (encoding,
    transport, decoding) plus jitter, which only ever adds. So the smallest recent
    `arrival - pts` is the best estimate of the fixed offset; it is taken over a sliding
    window of `window_s` seconds so that it follows a camera clock that runs slightly fast
    or slow (drift), and the mapped time never lies after the frame's arrival. A pts that
    goes backwards or jumps ahead of the arrivals by more than `JUMP_S` (a restarted
    stream, a wrapped counter) starts the mapping afresh.
    """

    JUMP_S = 2.0

    def __init__(self, window_s: float = 10.0):
        self.window_ns = round(window_s * 1e9)
        self._window: collections.deque[tuple[int, int]] = collections.deque()  # (arrival, offset), offsets rising
        self._last: tuple[int, int] | None = None  # (pts_ns, arrival_ns)

    def map(self, pts_s: float, arrival_ns: int) -> int:
        """The capture time, on the pipeline clock, of a frame stamped `pts_s` that arrived at `arrival_ns`."""
        pts_ns = round(pts_s * 1e9)
        if self._last is not None:
            d_pts, d_arrival = pts_ns - self._last[0], arrival_ns - self._last[1]
            if d_pts < 0 or d_pts - d_arrival > self.JUMP_S * 1e9:
                self.reset()
        self._last = (pts_ns, arrival_ns)
        offset = arrival_ns - pts_ns
        window = self._window
        while window and window[-1][1] >= offset:  # a monotonic deque: its head is the minimum
            window.pop()
        window.append((arrival_ns, offset))
        while arrival_ns - window[0][0] > self.window_ns:
            window.popleft()
        return pts_ns + window[0][1]

    def reset(self) -> None:
        self._window.clear()
        self._last = None


class LiveSource(Source):
    """A camera or stream that may be lost and come back; see the module docstring.

    `cfg` is the source's config, a `LiveOptions`.
    """

    realtime = True
    #: Skip the frames buffered in the network stack at start and after a reconnect (streams).
    drain_backlog = False

    def __init__(self, name: str, cfg: LiveOptions):
        super().__init__(name)
        self.cfg = cfg
        self._seq = 0
        self._last_t_ns = 0
        self._connected = False
        self._recovering = False
        self._why = ""  # a subclass's reason for the last None from _grab
        self._backlog_left = 0
        self._waited_ns = 0
        self._interrupted = threading.Event()
        drop = cfg.repeats == "drop" or (cfg.repeats == "auto" and name == "ir")
        self._repeats = RepeatDetector(self.stats, round(cfg.stall_ms * 1e6)) if drop else None

    # --- what a subclass provides ------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> None:
        """Open the device or stream; SourceError (one line) if it cannot be opened."""

    @abc.abstractmethod
    def _grab(self) -> tuple[np.ndarray, int] | None:
        """The next image, in this source's pixel format once `open()` has set it, and its
        capture time in pipeline-clock ns (before the latency correction); None when the
        device or stream is lost, with the reason in `self._why` if there is a better one
        than "stopped delivering frames"."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Release the device or stream; safe when nothing is open."""

    @abc.abstractmethod
    def where(self) -> str:
        """How errors name this source, e.g. 'ir camera /dev/video0'."""

    def _check_first(self, image: np.ndarray) -> None:
        """Refuse (SourceError) a first frame that is not what the rig asked for."""

    def _output_size(self, first: np.ndarray) -> tuple[int, int]:
        """The (width, height) every frame is delivered in: by default the first frame's."""
        return first.shape[1], first.shape[0]

    # --- the contract --------------------------------------------------------------------

    def open(self) -> None:
        self._connect()
        self._connected = True
        got = self._grab()
        if got is None:
            self.close()
            raise SourceError(f"{self.where()}: opened but delivered no frame; check the requested size, "
                              "rate and format (`streamfuse devices` lists what a camera offers)")
        try:
            self._check_first(got[0])
        except SourceError:
            self.close()
            raise
        # The frame read here is not handed out: it waited for the other camera to open, stale.
        self.size = self._output_size(got[0])
        self._expect_backlog()

    def _expect_backlog(self) -> None:
        """Frames a stream sent while nobody read (since open, or while reconnecting) are
        waiting in socket buffers: skip the ones that come at once, up to 2 s worth, until a
        frame has to be waited for (a quarter of a frame period)."""
        if self.drain_backlog:
            fps = float(self.fps) or 30.0
            self._backlog_left = round(2 * fps)
            self._waited_ns = round(1e9 / fps / 4)

    def read(self) -> Frame | None:
        while not self._interrupted.is_set():
            if not self._connected and not self._reconnect():
                return None
            asked = now_ns()
            got = self._grab()
            if got is None:
                self._lost(self._why or "stopped delivering frames")
                continue
            image, t_ns = got
            if self._recovering:
                self._recovering = False
                self.stats.up = True
                self.stats.reconnects += 1
                self._note_change(image)
            if self._backlog_left > 0:
                if now_ns() - asked < self._waited_ns:
                    self._backlog_left -= 1
                    self.stats.backlog += 1
                    continue
                self._backlog_left = 0
            image = self._fit(image)
            if self._repeats is not None and self._repeats.is_repeat(image, t_ns):
                continue
            return self._stamp(image, t_ns)
        return None

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        self._connected = False
        self._disconnect()

    def describe(self) -> str:
        return f"{super().describe()} from {self.where()}"

    # --- the machinery -------------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        if not self.cfg.reconnect:
            raise RuntimeFailure(f"{self.where()} stopped delivering frames ({reason}); "
                                 "set `reconnect: true` to wait for it to come back")
        if self.stats.up:
            self.stats.up = False
            self.stats.outages += 1
        self.stats.last_error = reason
        self._connected = False
        self._disconnect()

    def _reconnect(self) -> bool:
        """Reopen with growing pauses; False if interrupted first."""
        delay = RECONNECT_FIRST_S
        while not self._interrupted.wait(delay):
            try:
                self._connect()
            except SourceError as exc:
                self.stats.last_error = str(exc)
                delay = min(2 * delay, RECONNECT_MAX_S)
                continue
            self._connected = True
            self._recovering = True
            if self._repeats is not None:
                self._repeats.reset()
            self._expect_backlog()
            return True
        return False

    def _note_change(self, image: np.ndarray) -> None:
        """Report a source that came back in another size or format."""
        w, h = self.size
        shape = f"{image.shape[1]}x{image.shape[0]} {image.dtype}{'x3' if image.ndim == 3 else ''}"
        if (image.shape[1], image.shape[0]) != (w, h) or _pixel_format_of(image) != self.pixel_format:
            self.stats.last_error = f"came back as {shape}; converted to {w}x{h} {self.pixel_format}"

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """`image` in the size and pixel format the source opened with."""
        w, h = self.size
        if image.shape[1] != w or image.shape[0] != h:
            self.stats.resized += 1
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if _pixel_format_of(image) != self.pixel_format:
            image = to_pixel_format(image, self.pixel_format, self.where())
        return image

    def _stamp(self, image: np.ndarray, t_ns: int) -> Frame:
        t_ns = max(t_ns - round(self.cfg.latency_ms * 1e6), self._last_t_ns + 1)
        self._last_t_ns = t_ns
        frame = Frame(image, t_ns, self._seq, self.name, self.pixel_format, now_ns())
        self._seq += 1
        return frame
