"""Live refinement: corrects small drift of the registration in the background.

A rig's mounting flexes with temperature and knocks, and the working distance is never exact,
so the calibrated mapping drifts by a few pixels. With `registration: {refine: true}` the main
loop offers each raw pair to `LiveRefiner.offer`, which costs nothing unless a new estimate is
due (every `every_s` seconds) and the worker is idle; then it copies the pair into a one-slot
mailbox. The worker thread runs the target-free estimator (targetfree.py: direct cross-modal
refinement around the mapping in effect, within `max_px`, about a second on a 2-core CPU) and
hands the result to `Registrar.refine_to` only when the estimator accepted it (better than the
mapping in effect on held-back similarities, by more than their noise: targetfree.MIN_EDGE_GAIN,
so a correction never makes the alignment worse),
it is confident enough and moves the IR frame's corners by at most `max_px`; the main loop
applies it at its next frame. Nothing here touches the GPU.
"""
from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np

from streamfuse.errors import RuntimeFailure
from streamfuse.register import targetfree
from streamfuse.register.geometry import corner_rms

log = logging.getLogger(__name__)

#: Seconds `stop` waits for an estimate in progress to finish.
STOP_TIMEOUT_S = 5.0


class LiveRefiner:
    """The background worker of one `Registrar` (see the module docstring).

    Attributes:
        applied, rejected: how many estimates were applied / turned down so far.
        last: the latest estimate (targetfree.Alignment), or None.
    """

    def __init__(self, registrar, every_s: float, min_confidence: float, max_px: float):
        self._registrar = registrar
        self.every_s, self.min_confidence, self.max_px = every_s, min_confidence, max_px
        self.applied = self.rejected = 0
        self.last: targetfree.Alignment | None = None
        self._mailbox: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._next_s = time.monotonic()   # the first pair is taken at once
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def offer(self, ir: np.ndarray, vis: np.ndarray) -> None:
        """Called by the main loop with every raw pair; O(1) unless an estimate is due."""
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeFailure(f"live registration refinement failed: {error}") from error
        now = time.monotonic()
        if now < self._next_s or self._busy:
            return
        self._next_s = now + self.every_s
        with self._lock:
            self._mailbox = (ir.copy(), vis.copy())   # capture may reuse its buffers
            self._busy = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="registration-refine", daemon=True)
            self._thread.start()
        self._wake.set()

    def stop(self) -> bool:
        """Stop the worker; False if it is still busy after STOP_TIMEOUT_S."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(STOP_TIMEOUT_S)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            with self._lock:
                pair, self._mailbox = self._mailbox, None
            if pair is None:
                continue
            try:
                self._estimate(*pair)
            except Exception as exc:  # a bug: surfaces on the main loop at the next offer
                self._error = exc
                return
            finally:
                self._busy = False

    def _estimate(self, ir: np.ndarray, vis: np.ndarray) -> None:
        current = self._registrar.H_vis_from_ir
        try:
            estimate = targetfree.estimate(ir, vis, current, near_px=self.max_px)
        except cv2.error as exc:   # degenerate images (a flat frame): no estimate this time
            log.info("registration refinement: no estimate (%s)", str(exc).splitlines()[-1][:80])
            self.rejected += 1
            return
        self.last = estimate
        moved = corner_rms(estimate.H_vis_from_ir, current, self._registrar.ir_size)
        if not estimate.accepted or estimate.confidence < self.min_confidence or moved > self.max_px:
            self.rejected += 1
            log.info("registration refinement: kept the mapping (confidence %.2f, would move %.1f px%s)",
                     estimate.confidence, moved, f"; {estimate.reason}" if estimate.reason else "")
            return
        if not self._registrar.refine_to(estimate.H_vis_from_ir, current):
            return   # the distance changed meanwhile: the next estimate starts from the new one
        self.applied += 1
        log.info("registration refined: moved %.2f px (confidence %.2f)", moved, estimate.confidence)
