"""The prior extractor in a child process (`priors.isolation: process`, the default).

Why a process and not only a low-priority thread: the worker thread shares the frame loop's
interpreter lock. Between torch operations the extractor runs Python code holding that lock,
and a SCHED_IDLE thread that holds it is exactly the thread the scheduler will not run while
the frame loop is busy, so the frame loop waits for a thread that cannot run (a priority
inversion the lock cannot see). In its own process the extractor shares no lock with the
frame loop, the whole process (every torch thread) is in SCHED_IDLE, and the frame loop's
process never imports torch for the priors (about 600 MB less resident memory there).

The child is `python -m streamfuse.priors.process IN_FD OUT_FD`: a fresh interpreter (never a
fork of a process that already runs threads, and unlike multiprocessing's spawn it does not
re-run the parent's main script, so a user's script needs no `__main__` guard), talking over
two inherited pipes with `multiprocessing.connection.Connection` (pickled messages; its
stdout and stderr stay the parent's, for warnings). The parent first sends (PriorConfig, rig
path, torch threads); the child answers ("ready", how it is scheduled) or ("usage" | "error",
one line) once its models are loaded; then each ("extract", ir, vis, t_ns, index, reason) is
answered with ("prior", Prior) or ("error", one line), and ("stop",) ends it.

Between frames only (`priors.yield_to_frames`, by default on up to 2 cores): the frame loop stops the child
(SIGSTOP) while it works on a pair and continues it (SIGCONT) when it waits for the next, so a
refresh runs only in the time the frame loop leaves. SCHED_IDLE alone already keeps the child
off a core the frame loop wants, but not off the other core, whose caches, memory bandwidth
and (on a virtual machine) physical core the frame loop shares; stopped, it takes none of
them. A stopped child ignores everything but SIGKILL, so `close()` continues it first, and
the child asks the kernel to kill it if the frame loop's process dies (PR_SET_PDEATHSIG),
so it is never left stopped behind a crash.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.priors.config import PriorConfig
from streamfuse.priors.prior import Prior

#: How long loading the models may take in the child (ViT-B/16 from disk: a few seconds;
#: first use of a hub cache or a cold disk: more).
LOAD_TIMEOUT_S = 300.0
#: How long `pause()` waits for the child to report that it stopped (it takes microseconds).
STOP_WAIT_S = 0.02
#: How long stopping waits for the child to end by itself, then after SIGTERM.
STOP_GRACE_S = 0.5


class ProcessExtractor:
    """`extract(ir, vis, t_ns=, index=, reason=) -> Prior`, computed by a child process.

    Built by `open_priors`; raises UsageError in one line when the child cannot load the
    models (the same messages as in-process loading), RuntimeFailure when the child dies.
    Used from the prior worker thread only (one request at a time).
    """

    def __init__(self, cfg: PriorConfig, rig_path: Path | str, *, threads: int):
        child_reads, parent_writes = os.pipe()
        parent_reads, child_writes = os.pipe()
        self._proc = subprocess.Popen([sys.executable, "-m", "streamfuse.priors.process", str(child_reads),
                                       str(child_writes)], pass_fds=(child_reads, child_writes),
                                      stdin=subprocess.DEVNULL)
        os.close(child_reads)  # the child's ends live in the child only, so its death reads as EOF here
        os.close(child_writes)
        self._send = Connection(parent_writes, readable=False)
        self._recv = Connection(parent_reads, writable=False)
        self._held = False
        self._closed = False
        self._lock = threading.Lock()  # pause/resume (frame loop) against close (shutdown)
        #: The child's process id (for tests and for anyone looking at `ps`).
        self.pid = self._proc.pid
        self._send.send((cfg, str(rig_path), threads))
        kind, text = self._receive(LOAD_TIMEOUT_S, "loading the models")
        if kind == "usage":
            self.close()
            raise UsageError(text)
        if kind != "ready":
            self.close()
            raise RuntimeFailure(f"prior process: {text}")
        #: How the child is scheduled ("SCHED_IDLE", "nice +10"), for the run's log.
        self.scheduled = text

    def __call__(self, ir: np.ndarray, vis: np.ndarray, *, t_ns: int = 0, index: int = 0,
                 reason: str = "") -> Prior:
        try:
            self._send.send(("extract", ir, vis, t_ns, index, reason))
        except OSError:  # BrokenPipeError: the child is gone
            raise RuntimeFailure(f"prior process ended unexpectedly (exit code {self._proc.poll()})") from None
        kind, payload = self._receive(None, "a refresh")
        if kind != "prior":
            raise RuntimeFailure(payload)  # the child's one line, as a thread's error would read
        return payload

    def pause(self) -> None:
        """Stop the child where it is (SIGSTOP) until `resume()`; nothing once closed. Returns
        once it has stopped (a signal is delivered asynchronously; microseconds here)."""
        with self._lock:
            if not self._closed and not self._held and self._signal(signal.SIGSTOP):
                self._held = True
                self._wait_stopped()

    def _wait_stopped(self) -> None:
        """Until the child reports stopped, at most STOP_WAIT_S (a child already stopped by
        someone else reports nothing new, and the frame loop must not wait for it)."""
        deadline = time.monotonic() + STOP_WAIT_S
        while True:
            try:
                pid, status = os.waitpid(self._proc.pid, os.WUNTRACED | os.WNOHANG)
            except ChildProcessError:  # already reaped
                self._held = False
                return
            if pid and not os.WIFSTOPPED(status):  # it died meanwhile: keep its exit code for close()
                self._proc.returncode = os.waitstatus_to_exitcode(status)
                self._held = False
            if pid or time.monotonic() > deadline:
                return
            time.sleep(0.0001)

    def resume(self) -> None:
        """Continue a child that `pause()` stopped."""
        with self._lock:
            if self._held:
                self._signal(signal.SIGCONT)
                self._held = False

    def _signal(self, sig: int) -> bool:
        try:
            os.kill(self._proc.pid, sig)
        except ProcessLookupError:  # it died: the next request says so
            return False
        return True

    def close(self) -> None:
        """End the child: asked to stop, it ends between refreshes; one in the middle of a
        refresh is terminated after STOP_GRACE_S (it holds nothing that needs saving)."""
        with self._lock:
            self._closed = True
            if self._held:  # a stopped process would see neither the message nor SIGTERM
                self._signal(signal.SIGCONT)
                self._held = False
        try:
            self._send.send(("stop",))
        except OSError:
            pass
        for end in (self._proc.terminate, self._proc.kill):
            try:
                self._proc.wait(STOP_GRACE_S)
                break
            except subprocess.TimeoutExpired:
                end()
        self._proc.wait()
        self._send.close()

    def _receive(self, timeout: float | None, what: str):
        try:
            if timeout is not None and not self._recv.poll(timeout):
                raise RuntimeFailure(f"prior process: no answer after {timeout:g} s of {what}")
            return self._recv.recv()
        except (EOFError, OSError):
            try:
                code = self._proc.wait(1.0)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeFailure(f"prior process ended during {what} (exit code {code}; "
                                 f"out of memory?)") from None


def serve(requests: Connection, answers: Connection) -> None:
    """The child's main: lower the process, load the models, answer requests until stop."""
    from streamfuse.priors.weights import one_line

    # Ctrl-C reaches the whole process group; the parent decides when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    cfg, rig_path, threads = requests.recv()
    scheduled = _lower_process(cfg)
    try:
        import torch

        torch.set_num_threads(threads)
        from streamfuse.priors.extractor import build_extractor

        extract = build_extractor(cfg, rig_path)
    except UsageError as exc:
        answers.send(("usage", str(exc)))
        return
    except Exception as exc:  # sent to the parent as one line, raised there
        answers.send(("error", one_line(exc)))
        return
    answers.send(("ready", scheduled))
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if request[0] != "extract":
            return
        _, ir, vis, t_ns, index, reason = request
        try:
            answers.send(("prior", extract(ir, vis, t_ns=t_ns, index=index, reason=reason)))
        except Exception as exc:
            answers.send(("error", one_line(exc)))


#: prctl(2) option: the signal this process gets when its parent ends.
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL this process when the frame loop's process ends, even while it is stopped by
    `pause()` (SIGKILL is the one signal a stopped process still acts on). Linux only; where
    prctl is missing, the pipe's EOF still ends a child that is not stopped."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(0)


def _lower_process(cfg: PriorConfig) -> str:
    """SCHED_IDLE (or `nice` steps) for every thread of this process: the ones that exist
    already (numpy's BLAS pool starts at import) and, inherited, the ones started later."""
    try:
        for task in os.listdir("/proc/self/task"):
            tid = int(task)
            if cfg.schedule == "idle" and hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            elif cfg.nice:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + cfg.nice))
    except (AttributeError, OSError):
        return "unchanged (own process)"
    if cfg.schedule == "idle" and hasattr(os, "SCHED_IDLE"):
        return "SCHED_IDLE (own process)"
    return f"nice +{cfg.nice} (own process)" if cfg.nice else "unchanged (own process)"

if __name__ == "__main__":
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
