"""Refreshing the prior off the frame loop: the policy, the worker thread, the pipeline's handle.

It works like this. Every fused frame, the main loop offers its registered pair to the
worker (a one-slot queue that drops the older offer: never blocks) and reads the latest
published prior (one attribute read: never waits). The worker thread takes the newest
offer, asks the `RefreshPolicy` whether a refresh is due (first pair, every N frames, too
old, scene change) and, if so, computes a new Prior into fresh arrays while the frame loop
keeps using the published one, then publishes it by swapping one reference (double
buffering: the loop sees the old prior or the new one, never half of either). Offers that
arrive during a refresh replace each other, so the next refresh starts from the newest pair.

The worker runs torch with `priors.threads` threads (default: the thread budget's share,
`streamfuse.threads`) at the lowest priority (`priors.schedule`: SCHED_IDLE, or `priors.nice`
steps of niceness; set on its native thread id, inherited by torch's worker threads), so on
a small CPU it takes the cycles the frame loop leaves and not the ones it needs.
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamfuse import threads as budget
from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.frames import Frame
from streamfuse.priors.config import PriorConfig
from streamfuse.priors.prior import Prior
from streamfuse.priors.weights import one_line
from streamfuse.queues import BoundedQueue, EndOfStream
from streamfuse.stats import TIMING_HISTORY, StageTimer
from streamfuse.threads import PriorSchedule, lower_this_thread

#: (w, h) of the thumbnails the scene-change test compares: 768 pixels, ~0.1 ms per camera.
THUMB_SIZE = (32, 24)
#: How long stopping waits for a refresh in progress (a ViT-B/16 refresh on 2 CPU cores
#: takes 1-3 s); the worker is a daemon thread, so a stuck one cannot keep the process alive.
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Offer:
    """A registered pair offered to the worker: IR in the visible frame, visible, when, which."""

    ir: np.ndarray
    vis: np.ndarray
    t_ns: int
    index: int


class RefreshPolicy:
    """Decides whether the newest pair needs a new prior. Used by the worker thread only.

    Reasons, checked in this order: "first" (no prior yet), "scene" (a thumbnail of either
    camera moved more than `scene_change` from the prior's), "frames" (`every_frames` frames
    since the prior's pair), "age" (`max_age_s` of capture time since the prior's pair).
    """

    def __init__(self, every_frames: int, max_age_s: float, scene_change: float):
        self.every_frames = every_frames
        self.max_age_ns = round(max_age_s * 1e9)
        self.scene_change = scene_change
        self._last: Offer | None = None
        self._thumbs: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_config(cls, cfg: PriorConfig) -> RefreshPolicy:
        return cls(cfg.every_frames, cfg.max_age_s, cfg.scene_change)

    def due(self, offer: Offer) -> str | None:
        """Why `offer` needs a refresh, or None if the current prior still stands."""
        last = self._last
        if last is None:
            return "first"
        if self.scene_change and self.scene_distance(offer) > self.scene_change:
            return "scene"
        if self.every_frames and offer.index - last.index >= self.every_frames:
            return "frames"
        if self.max_age_ns and offer.t_ns - last.t_ns >= self.max_age_ns:
            return "age"
        return None

    def refreshed(self, offer: Offer) -> None:
        """Record that the prior now comes from `offer`."""
        self._last = offer
        self._thumbs = (thumbnail(offer.ir), thumbnail(offer.vis)) if self.scene_change else None

    def scene_distance(self, offer: Offer) -> float:
        """The larger, over the two cameras, mean absolute difference between this pair's
        normalised thumbnail and the prior's (in standard deviations; ~1.1 for unrelated
        images, ~0 for the same view)."""
        if self._thumbs is None:
            return 0.0
        now = (thumbnail(offer.ir), thumbnail(offer.vis))
        return max(float(np.mean(np.abs(a - b))) for a, b in zip(now, self._thumbs))


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A THUMB_SIZE float32 grey thumbnail with zero mean and unit spread, so that a change
    of exposure or thermal gain is not a scene change."""
    small = cv2.resize(image, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    small = small.astype(np.float32)
    mean = float(small.mean())
    return (small - mean) / max(float(small.std()), 0.01 * (mean + 1.0))


class PriorWorker:
    """The refresh thread; `extract(ir, vis, t_ns=, index=, reason=) -> Prior` does the work."""

    def __init__(self, extract: Callable[..., Prior], policy: RefreshPolicy, *, threads: int | None = None,
                 nice: int = 10, schedule: PriorSchedule = "idle", in_thread: bool = True):
        """`in_thread`: `extract` runs here, so this thread is lowered and sizes torch's pool;
        False: `extract` hands the work to another process (`process.ProcessExtractor`), which
        does both itself, and this thread (waiting on a pipe) keeps its priority."""
        self.policy = policy
        self.refresh_time = StageTimer("prior refresh")
        self.reasons: collections.Counter[str] = collections.Counter()
        #: time.monotonic() of each publication (the most recent ones), for intervals.
        self.published_at: collections.deque[float] = collections.deque(maxlen=TIMING_HISTORY)
        #: What computes the priors (`extract`; the stage's `holding()` pauses a process's).
        self.extractor = extract
        self._threads = threads
        self._nice = nice
        self._schedule = schedule
        self._in_thread = in_thread
        #: How the worker's thread was scheduled ("SCHED_IDLE", "nice +10"), once it started.
        self.scheduled = ""
        self._slot: BoundedQueue[Offer] = BoundedQueue(1, "drop_oldest")
        self._stop = threading.Event()
        self._latest: Prior | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="prior-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, offer: Offer) -> None:
        """Hand over the newest pair; replaces one the worker has not taken yet. Never blocks."""
        self._slot.put(offer)

    def latest(self) -> Prior | None:
        """The newest published prior (None before the first); RuntimeFailure if the worker died."""
        if self._error is not None:
            raise RuntimeFailure(f"prior worker: {one_line(self._error)}")
        return self._latest

    @property
    def published(self) -> Prior | None:
        """The newest published prior, without checking the worker's health (for figures)."""
        return self._latest

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Ask the thread to end; True once it has. In a thread, the refresh in progress is
        finished first; in another process (`extract` has a `close`), that process is ended
        at once, since a refresh nobody will use is not worth waiting for."""
        self._stop.set()
        self._slot.close()
        close = getattr(self.extractor, "close", None)
        if close is not None:
            close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            if self._in_thread:
                self.scheduled = lower_this_thread(self._schedule, self._nice)
                _set_torch_threads(self._threads or budget.current().prior_threads)
            else:
                self.scheduled = getattr(self.extractor, "scheduled", "own process")
            while not self._stop.is_set():
                try:
                    offer = self._slot.get()
                except EndOfStream:
                    return
                if self._stop.is_set():
                    return
                reason = self.policy.due(offer)
                if reason is not None:
                    self._refresh(offer, reason)
        except BaseException as exc:  # re-raised on the main thread by latest()
            if not self._stop.is_set():  # after stop: the end of a process that was ended
                self._error = exc

    def _refresh(self, offer: Offer, reason: str) -> None:
        prior = self.extractor(offer.ir, offer.vis, t_ns=offer.t_ns, index=offer.index, reason=reason)
        self.policy.refreshed(offer)
        self.refresh_time.add(prior.refresh_s)
        self.reasons[reason] += 1
        self._latest = prior  # the swap: one reference assignment, atomic for the reader
        self.published_at.append(time.monotonic())


@dataclass(frozen=True)
class PriorFigures:
    """What the priors did in a run, for the run report (a snapshot; the refresh durations
    and ages are the report's "prior refresh" and "prior age" stage timers)."""

    refreshes: int
    #: Refreshes by the reason the policy gave ("first", "frames", "age", "scene").
    reasons: dict[str, int]
    #: Capture-time age (s) of the prior the last frame was fused with; None before the first.
    age_s: float | None
    #: Monotonic clock times (s) of the recent refreshes, oldest first.
    published_at: tuple[float, ...]
    #: (reason, frame index) of the newest prior; None before the first.
    latest: tuple[str, int] | None


class PriorStage:
    """The pipeline's handle on the priors, used from the main thread only."""

    def __init__(self, worker: PriorWorker, yield_to_frames: bool = False):
        """`yield_to_frames`: `holding()` pauses the worker's extractor (a `ProcessExtractor`:
        its child process) while the frame loop works on a pair."""
        self.worker = worker
        self._pausable = getattr(worker.extractor, "pause", None) is not None and yield_to_frames
        self.age = StageTimer("prior age")
        #: Age (s, capture time) of the prior used for the last frame; None before the first.
        self.age_s: float | None = None

    @property
    def timers(self) -> dict[str, StageTimer]:
        """The stage timers for the run report: refresh durations and ages, in seconds."""
        return {self.worker.refresh_time.name: self.worker.refresh_time, self.age.name: self.age}

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> bool:
        return self.worker.stop()

    def figures(self) -> PriorFigures:
        latest = self.worker.published  # not latest(): a snapshot must not raise the worker's error
        return PriorFigures(self.worker.refresh_time.count, dict(self.worker.reasons), self.age_s,
                            tuple(self.worker.published_at),
                            None if latest is None else (latest.reason, latest.index))

    @contextlib.contextmanager
    def holding(self):
        """The frame loop's work on one pair: the prior process is stopped for its length
        (with `yield_to_frames`; otherwise nothing happens)."""
        if not self._pausable:
            yield
            return
        self.worker.extractor.pause()
        try:
            yield
        finally:
            self.worker.extractor.resume()

    def step(self, ir: np.ndarray, vis: Frame, index: int) -> Prior | None:
        """Offer this frame's registered pair; return the prior to fuse it with (never waits)."""
        self.worker.offer(Offer(ir, vis.image, vis.t_ns, index))
        prior = self.worker.latest()
        if prior is not None:
            self.age_s = (vis.t_ns - prior.t_ns) / 1e9
            self.age.add(self.age_s)
        return prior


def open_priors(cfg: PriorConfig, rig_path: Path | str) -> PriorStage:
    """Load the models a priors section names and return the (not yet started) stage.

    Raises UsageError in one line: the learn extra missing, an unknown model or tag, a weight
    that is not on disk (offline) or cannot be downloaded, a checkpoint that does not fit.
    """
    require_learn(rig_path)
    policy = RefreshPolicy.from_config(cfg)
    if cfg.isolation == "process":
        from streamfuse.priors.process import ProcessExtractor

        extractor = ProcessExtractor(cfg, rig_path, threads=cfg.threads or budget.current().prior_threads)
        return PriorStage(PriorWorker(extractor, policy, in_thread=False), yield_to_frames=cfg.yields(budget.current().cores))
    from streamfuse.priors.extractor import build_extractor

    extractor = build_extractor(cfg, rig_path)
    return PriorStage(PriorWorker(extractor, policy, threads=cfg.threads, nice=cfg.nice, schedule=cfg.schedule))


def require_learn(rig_path: Path | str) -> None:
    """UsageError with the install hint unless torch, open_clip and timm are installed (found,
    not imported: with the priors in their own process this process never needs them)."""
    import importlib.util

    for name in ("torch", "open_clip", "timm"):
        if importlib.util.find_spec(name) is None:
            raise UsageError(f"{rig_path}: semantic priors need torch, open_clip_torch and timm "
                             f"({name} is missing); install them with pip install 'streamfuse[learn]' "
                             f"(in a checkout: pip install -e '.[learn]'), or remove the priors section")


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)

