"""`RunReport`: what a run did, in figures only; the snapshot every viewer reads."""
from __future__ import annotations

from dataclasses import dataclass, field

from streamfuse.capture.base import CaptureStats
from streamfuse.capture.liveness import LiveFigures
from streamfuse.priors.worker import PriorFigures
from streamfuse.sinks import SinkState
from streamfuse.stats import RateMeter, StageTimer
from streamfuse.sync import SyncStats


@dataclass
class RunReport:
    """What a run did, in figures only; also the live snapshot the progress line, the window
    and the monitor read (refreshed every half second, and once more at the end)."""

    frames: int = 0
    wall_s: float = 0.0
    sync: SyncStats = field(default_factory=SyncStats)
    capture_drops: int = 0
    sink_drops: int = 0
    stages: dict[str, StageTimer] = field(default_factory=dict)
    latency: StageTimer = field(default_factory=lambda: StageTimer("latency"))
    #: From exposure (paced) or arrival (unpaced) to the fused frame being handed to the sinks.
    fused_latency: StageTimer = field(default_factory=lambda: StageTimer("fused"))
    #: Each sink's latency (`SinkRunner.latency`), by sink name.
    sink_latency: dict[str, StageTimer] = field(default_factory=dict)
    rate: RateMeter = field(default_factory=RateMeter)
    sinks: list[SinkState] = field(default_factory=list)
    error: BaseException | None = None
    #: The semantic priors' figures when the rig has priors.
    priors: PriorFigures | None = None
    #: Per-source counters (stale, duplicates, FFC stalls, outages, reconnects, up), by name.
    sources: dict[str, CaptureStats] = field(default_factory=dict)
    #: Live rigs: what the watch over lost cameras saw (who is down, events, frames shown alone).
    live: LiveFigures | None = None
    #: The pipeline clock (frames.now_ns) when the capture threads started.
    t0_ns: int = 0
    #: Why the run is making no progress (both cameras deliver, nothing pairs); None while it does.
    warning: str | None = None
    #: Live rigs: per camera, the age past which a frame is skipped when a newer one waits.
    lag_bounds_ns: dict[str, int] = field(default_factory=dict)
    #: The thread budget the run had (`streamfuse.threads`), in words.
    threads: str = ""
    #: Whether the sources ran at their own rate on the wall clock (cameras, paced replay): the
    #: latency is then exposure to sink; unpaced, it is arrival to sink in a throughput run.
    paced: bool = False

    @property
    def stale(self) -> int:
        return sum(s.stale for s in self.sources.values())

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources.values())

    @property
    def ffc_stalls(self) -> int:
        return sum(s.ffc_stalls for s in self.sources.values())

    @property
    def skipped(self) -> int:
        """Frames skipped because the loop was behind and a newer frame waited."""
        return sum(s.skipped for s in self.sources.values())

    @property
    def reconnects(self) -> int:
        return sum(s.reconnects for s in self.sources.values())

    @property
    def sources_up(self) -> dict[str, bool]:
        """Whether each source is delivering (False while lost, frozen or silent)."""
        down = self.live.down if self.live is not None else {}
        return {name: not down.get(name, False) for name in self.sources}

    @property
    def prior_age_s(self) -> float | None:
        """Capture-time age (s) of the prior the last frame was fused with; None without one."""
        return self.priors.age_s if self.priors is not None else None

    @property
    def prior_refreshes(self) -> int:
        return self.priors.refreshes if self.priors is not None else 0

    @property
    def drops(self) -> int:
        return self.sync.unmatched_vis + self.sync.late + self.capture_drops + self.skipped + self.sink_drops

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0
