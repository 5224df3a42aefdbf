"""`streamfuse calibrate grab`: save raw IR/visible pairs from a rig's cameras for calibration.

Both cameras are read in turn on this thread (no pipeline, no registration, so a rig can be
grabbed from before it has a calibration: write `calibration: null`). A pair is kept when the
two capture times are within the rig's sync tolerance, at most one every `every_s` seconds,
so that the board can be moved between pairs. IR frames keep their bit depth (16-bit PNG).
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2

from streamfuse.capture import open_sources
from streamfuse.errors import UsageError
from streamfuse.frames import now_ns


def grab(rig, out: Path, count: int, every_s: float, say=print) -> int:
    """Save up to `count` pairs as out/ir/pairNNN.png and out/vis/pairNNN.png; the number saved
    (fewer when the inputs end first)."""
    folders = [out / "ir", out / "vis"]
    if any(f.is_dir() and any(f.glob("*.png")) for f in folders):
        raise UsageError(f"{out}: already holds image pairs; give a new folder")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: folder {out.parent} does not exist")
    ir, vis = open_sources(rig.ir, rig.vis, rig.scene)
    tolerance_ns = round(rig.sync.tolerance_ms * 1e6)
    try:
        ir.open()
        vis.open()
        t0 = now_ns()
        ir.start_clock(t0)
        vis.start_clock(t0)
        for f in folders:
            f.mkdir(parents=True, exist_ok=True)
        saved, due = 0, time.monotonic()
        a, b = ir.read(), vis.read()
        while saved < count and a is not None and b is not None:
            if a.t_ns < b.t_ns - tolerance_ns:
                a = ir.read()
                continue
            if b.t_ns < a.t_ns - tolerance_ns:
                b = vis.read()
                continue
            if time.monotonic() >= due:
                for folder, frame in zip(folders, (a, b)):
                    if not cv2.imwrite(str(folder / f"pair{saved:03d}.png"), frame.image):
                        raise UsageError(f"{folder}: cannot write images there")
                saved += 1
                due = time.monotonic() + every_s
                say(f"saved pair {saved}/{count}" + (" - move the board" if saved < count else ""))
            a, b = ir.read(), vis.read()
        return saved
    finally:
        ir.close()
        vis.close()
