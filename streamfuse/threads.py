"""The thread budget: how many threads each part of a run may use, decided in one place.

On a small machine every library's own thread pool competes for the same cores: OpenCV's
parallel_for, torch's OpenMP team, FFmpeg's decoder and x264's frame threads. Each pool is
sized for a machine to itself, so together they oversubscribe the cores and the frame loop
stalls whenever a pool's hand-off waits for a core (../shared/FACTS.md: a 1,700-parameter
torch model ran 1.2 ms alone and 100-900 ms inside the pipeline). `plan(cores)` gives each
part its share; `apply()` sets the process-wide pools once at the start of a run, and the
decoders, the encoder and the prior worker read their share from `current()`.

The prior worker gets the cores the frame loop leaves: one torch thread and, on Linux, the
SCHED_IDLE class (it runs only when no other thread of the machine wants the core), so a
refresh never preempts the fuse stage (docs/benchmarks.md has the measurement that chose
this over `nice`).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("streamfuse")

#: How the prior worker's thread is scheduled: SCHED_IDLE, or a raised nice value.
PriorSchedule = Literal["idle", "nice"]


@dataclass(frozen=True)
class ThreadBudget:
    """Threads per part on a machine of `cores` cores.

    Attributes:
        cores: the cores this process may run on.
        opencv: OpenCV's pool (the frame loop's image work: warps, filters, colour).
        torch: torch's intra-op threads in the frame loop (spg), where torch is used.
        decoder: FFmpeg threads per decoded stream (replay, network sources).
        encoder: x264 threads per recording or stream.
        prior_threads: torch threads of the prior worker.
    """

    cores: int
    opencv: int
    torch: int
    decoder: int
    encoder: int
    prior_threads: int

    def describe(self) -> str:
        return (f"{self.cores} cores: OpenCV {self.opencv}, torch {self.torch}, decoder {self.decoder} per stream, "
                f"encoder {self.encoder}, prior worker {self.prior_threads} (lowest priority)")


def available_cores() -> int:
    """The cores this process may use (its CPU affinity, which containers and taskset set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan(cores: int | None = None) -> ThreadBudget:
    """The budget for `cores` cores (default: this process's).

    Up to 4 cores every pool but OpenCV's gets one thread: the run already has a thread per
    camera, the frame loop, a thread per sink and the prior worker, which fill the cores
    between them; a second thread in any pool only adds hand-offs. OpenCV keeps all cores
    because its parallel_for runs inside the frame loop's own call and ends with it. Above
    4 cores the frame loop's torch gets half of them and x264 a quarter.
    """
    cores = cores or available_cores()
    if cores <= 4:
        return ThreadBudget(cores, opencv=cores, torch=1, decoder=1, encoder=1, prior_threads=1)
    return ThreadBudget(cores, opencv=cores, torch=cores // 2, decoder=2, encoder=max(1, cores // 4),
                        prior_threads=max(1, cores // 4))


_current: ThreadBudget | None = None
_lock = threading.Lock()


def current() -> ThreadBudget:
    """The budget in force (the one `apply()` set, else the plan for this machine)."""
    with _lock:
        return _current or plan()


def apply(budget: ThreadBudget | None = None) -> ThreadBudget:
    """Set the process-wide pools (OpenCV; torch if it is loaded) and make `budget` current.
    Called at the start of every run; parts that load torch later call `apply_torch()`."""
    global _current
    import cv2

    budget = budget or plan()
    with _lock:
        _current = budget
    cv2.setNumThreads(budget.opencv)
    if sys.modules.get("torch") is not None:
        apply_torch()
    return budget


def apply_torch() -> None:
    """Size torch's pool by the current budget (torch's thread count is process-wide)."""
    import torch

    torch.set_num_threads(current().torch)


def lower_this_thread(schedule: PriorSchedule, nice: int) -> str:
    """Give the calling thread the lowest share of the CPU (the prior worker): SCHED_IDLE, or
    `nice` steps of niceness. Linux schedules threads one by one, so this leaves the rest of
    the process alone; threads this one starts later inherit it. Returns what was applied
    (for logs); where the OS refuses, the thread keeps its priority and says so."""
    tid = threading.get_native_id()
    try:
        if schedule == "idle" and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        if nice:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
            return f"nice +{nice}"
    except (AttributeError, OSError) as exc:
        log.warning("could not lower the prior worker's priority (%s); it competes with the frame loop", exc)
        return "unchanged"
    return "unchanged"
