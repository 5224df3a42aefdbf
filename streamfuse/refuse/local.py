"""Re-fuse jobs in worker processes on this machine (no --ray).

Each job runs in a process of its own pool (started fresh, `spawn`, so no thread or lock of
this process is copied into it). Workers report progress through one queue. A worker that
dies (killed, out of memory) breaks the pool: the jobs that were running in it are tried
again in a new pool, up to `MAX_ATTEMPTS` times each, and the jobs already done stay done.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import queue
from collections.abc import Callable

from streamfuse.refuse.job import JobResult, JobSpec, run_job

#: Tries per job when workers die under it (the first included).
MAX_ATTEMPTS = 3
#: Seconds between looks at the progress queue.
POLL_S = 0.2

_progress_queue = None  # set in each worker by `_init`

Progress = Callable[[str, int, int], None]  # (name, frames so far, worker pid)
Done = Callable[[JobResult], None]


def run_local(specs: list[JobSpec], workers: int, on_progress: Progress, on_result: Done) -> list[JobResult]:
    """Run `specs` in up to `workers` processes; results in the order of `specs`."""
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    results: dict[int, JobResult] = {}
    attempts = {i: 0 for i in range(len(specs))}
    waiting = list(range(len(specs)))
    while waiting:
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(waiting)), mp_context=ctx,
                                    initializer=_init, initargs=(messages,)) as pool:
            futures = {}
            for i in waiting:
                attempts[i] += 1
                futures[pool.submit(_job, specs[i])] = i
            waiting = []
            pending = set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=POLL_S)
                _drain(messages, on_progress)
                for future in finished:
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except cf.process.BrokenProcessPool:
                        if attempts[i] < MAX_ATTEMPTS:
                            waiting.append(i)
                            continue
                        results[i] = JobResult.failed(specs[i], f"{specs[i].item.path}: the worker died "
                                                                f"{attempts[i]} times running it", 0.0)
                    on_result(results[i])
        _drain(messages, on_progress)
    return [results[i] for i in range(len(specs))]


def _init(messages) -> None:
    global _progress_queue
    _progress_queue = messages


def _job(spec: JobSpec) -> JobResult:
    import os

    pid = os.getpid()
    _progress_queue.put((spec.item.name, 0, pid))
    return run_job(spec, lambda name, frames: _progress_queue.put((name, frames, pid)))


def _drain(messages, on_progress: Progress) -> None:
    while True:
        try:
            name, frames, pid = messages.get_nowait()
        except queue.Empty:
            return
        on_progress(name, frames, pid)
