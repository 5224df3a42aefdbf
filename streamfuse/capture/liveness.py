"""Keeping a live rig going while one of its cameras is lost, frozen or silent.

A live source that loses its camera or stream reconnects by itself (`capture/live.py`);
meanwhile the main loop must neither wait for it nor stop. `Liveness` is the main loop's
view of that: a source is *down* while it reconnects, while its picture is frozen (a
flat-field-correction stall), or once it has published nothing for `down_after_ms`. While
one camera is down, the frames of the other are handed out on their own, as the rig's
`live.on_loss` says: `other` shows that camera alone (the IR one coloured with the fusion
palette and warped into the visible frame), `no_signal` a placeholder naming the lost one
(both drawn by `streamfuse.fuse.views`).
Fusion resumes with the first pair after the camera is back. Every change (down, up,
fusing again) is logged in `events` with its pipeline-clock time for the summary and the
monitor.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal

from streamfuse.capture.base import CaptureThread
from streamfuse.config import check_range
from streamfuse.frames import Frame

#: Events kept for the summary (the most recent ones).
EVENT_HISTORY = 256


@dataclass(frozen=True)
class LiveConfig:
    """How a rig with live sources treats late, stale and lost frames (rig key `live`)."""

    #: A frame captured longer ago than this when the main loop takes it is stale: skipped, counted.
    max_age_ms: float = 500.0
    #: When the pipeline falls behind: a frame older than this when taken, with a newer frame of
    #: the same camera already waiting, is skipped (counted) so the loop jumps to the newest
    #: frame instead of working through a backlog. 0: per camera, 1.5 frame periods plus its
    #: known latency (`lag_bound_ns`).
    max_lag_ms: float = 0.0
    #: A live source that has published nothing for this long counts as down.
    down_after_ms: float = 1000.0
    #: While one camera is down: show the other alone (other) or a NO SIGNAL placeholder (no_signal).
    on_loss: Literal["other", "no_signal"] = "other"

    def __post_init__(self):
        check_range("max_age_ms", self.max_age_ms, 1, 60_000)
        check_range("down_after_ms", self.down_after_ms, 10, 60_000)
        check_range("max_lag_ms", self.max_lag_ms, 0, 60_000)


def lag_bound_ns(cfg: LiveConfig, fps: float, latency_ms: float) -> int:
    """The age past which a camera's frame is skipped when a newer one waits (`max_lag_ms`)."""
    if cfg.max_lag_ms:
        return round(cfg.max_lag_ms * 1e6)
    return round(1.5e9 / fps + latency_ms * 1e6)


@dataclass(frozen=True)
class LiveEvent:
    t_ns: int      # pipeline clock
    source: str    # "ir", "vis", or "fusion"
    what: str      # "down", "up", "resumed"
    detail: str = ""

    def line(self, t0_ns: int) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{(self.t_ns - t0_ns) / 1e9:8.2f} s  {self.source} {self.what}{detail}"


class Liveness:
    """The main loop's watch over live sources; main thread only.

    Args:
        cfg: the rig's `live` section.
        captures: the capture threads of the IR and visible sources.
    """

    def __init__(self, cfg: LiveConfig, captures: list[CaptureThread]):
        self.cfg = cfg
        self.max_age_ns = round(cfg.max_age_ms * 1e6)
        self.silent_ns = round(cfg.down_after_ms * 1e6)
        self.events: collections.deque[LiveEvent] = collections.deque(maxlen=EVENT_HISTORY)
        self.single_frames = 0   # frames handed out with one camera only
        self._captures = {c.source.name: c for c in captures}
        self._down: dict[str, bool] = {name: False for name in self._captures}
        self._single = False

    def is_down(self, name: str) -> bool:
        return self._down[name]

    def watch(self, now: int) -> None:
        """Note which sources went down or came back since the last call."""
        for name, capture in self._captures.items():
            down = capture.is_down(now, self.silent_ns)
            if down != self._down[name]:
                self._down[name] = down
                stats = capture.stats
                why = (stats.last_error or "lost") if not stats.up else \
                    "frozen picture (FFC)" if stats.stalled else f"nothing for {self.cfg.down_after_ms:g} ms"
                self.events.append(LiveEvent(now, name, "down" if down else "up", why if down else ""))

    def other_down(self, frame: Frame) -> bool:
        """Whether `frame` must be shown alone because the other camera is down."""
        return any(down for name, down in self._down.items() if name != frame.camera)

    def paired(self, now: int) -> None:
        """A pair was fused: log the return to fusion after frames were shown alone."""
        if self._single:
            self._single = False
            self.events.append(LiveEvent(now, "fusion", "resumed"))

    def alone(self, frame: Frame) -> str:
        """`frame` is handed out alone (the other camera is down): count it, and return the
        name of the lost camera (the picture is drawn by `streamfuse.fuse.views`)."""
        self._single = True
        self.single_frames += 1
        return next(name for name, down in self._down.items() if down and name != frame.camera)

    def figures(self) -> "LiveFigures":
        """A snapshot for the run report."""
        return LiveFigures(dict(self._down), self.single_frames, tuple(self.events))


@dataclass(frozen=True)
class LiveFigures:
    """What the watch over live sources saw, for the run report (a snapshot)."""

    #: Whether each source is down now, by name.
    down: dict[str, bool]
    #: Frames handed out with one camera only.
    single_frames: int
    #: The most recent events, oldest first.
    events: tuple[LiveEvent, ...]


def summary_lines(sources: dict, live: LiveFigures | None, t0_ns: int, max_events: int = 12) -> list[str]:
    """Lines for the end-of-run summary of a live rig: each source's counters and the events."""
    if live is None:
        return []
    lines = []
    for name, s in sources.items():
        state = "DOWN" if live.down.get(name) else "up"
        lines.append(f"  {name}: {state}; {s.frames} frames, {s.stale + s.backlog} stale, {s.skipped} skipped behind "
                     f"newer, {s.duplicates} repeated, "
                     f"{s.ffc_stalls} FFC stalls, {s.outages} lost, {s.reconnects} reconnected"
                     + (f", {s.resized} resized" if s.resized else "")
                     + (f"; last problem: {s.last_error}" if s.last_error else ""))
    if live.single_frames:
        lines.append(f"  shown alone while the other camera was down: {live.single_frames} frames")
    events = list(live.events)[-max_events:]
    if events:
        lines.append("  events (since start): " + " | ".join(e.line(t0_ns).strip() for e in events))
    return lines
