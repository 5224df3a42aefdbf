"""Does watching slow the pipeline? `streamfuse bench-viewers [RIG] [--seconds S] [--rounds R]`

Runs the rig with the browser monitor and nobody watching, then with three MJPEG viewers
(separate processes, as browsers would be) plus a sink that takes 200 ms per frame, in
interleaved rounds, at the cameras' pace and flat out. Prints the pipeline's frame rate over
a steady window of each run (after a second of warm-up) and the ratio of the two.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time

from streamfuse.pipeline import run
from streamfuse.report import RunReport
from streamfuse.rig import RigConfig
from streamfuse.sinks import MonitorSinkConfig, NullSinkConfig

#: Seconds of each run not measured: start-up, viewers connecting.
WARM_UP_S = 1.0
#: A viewer: reads the MJPEG stream for argv[2] seconds and prints how many pictures it got.
VIEWER = """
import sys, time, urllib.request
end = time.monotonic() + float(sys.argv[2])
n = 0
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    while time.monotonic() < end:
        chunk = r.read1(65536)
        if not chunk:
            break
        n += chunk.count(b"--frame")
print(n)
"""


def measure(rig: RigConfig, seconds: float, viewers: int = 0,
            slow_ms: float = 0.0) -> tuple[float, list[int], RunReport]:
    """(fused fps over the steady window, pictures each viewer got, the run's report) for one
    run of `rig` with a monitor, `viewers` MJPEG viewers and, if `slow_ms`, a sink that takes
    that long per frame."""
    port = _free_port()
    sinks = (MonitorSinkConfig(port=port),) + ((NullSinkConfig(delay_ms=slow_ms),) if slow_ms else ())
    rig = dataclasses.replace(rig, sinks=rig.sinks + sinks)
    samples: list[tuple[float, int]] = []
    live: list[RunReport] = []
    stop = threading.Event()
    result: dict = {}

    def go():
        try:
            result["report"] = run(rig, stop=stop, on_progress=live.append)
        except BaseException as exc:  # re-raised below, on the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    procs = []
    try:
        time.sleep(0.5)  # the monitor listens once the sinks are open
        procs = [subprocess.Popen([sys.executable, "-c", VIEWER, f"http://127.0.0.1:{port}/stream.mjpg",
                                   str(seconds + WARM_UP_S)], stdout=subprocess.PIPE, text=True)
                 for _ in range(viewers)]
        end = time.monotonic() + WARM_UP_S + seconds
        while time.monotonic() < end:
            time.sleep(0.1)
            if live and time.monotonic() >= end - seconds:
                samples.append((time.monotonic(), live[-1].frames))
    finally:
        stop.set()
        thread.join(60)
        got = [int(p.communicate(timeout=30)[0] or 0) for p in procs]
    if "error" in result:
        raise result["error"]
    (t0, f0), (t1, f1) = samples[0], samples[-1]
    return (f1 - f0) / (t1 - t0), got, result["report"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(base: RigConfig, seconds: float, rounds: int) -> None:
    """Print the frame rate alone and with viewers, at the cameras' pace and flat out."""
    print(f"rig {base.name}, {os.cpu_count()} CPU cores, {seconds:g} s per run, {rounds} rounds; "
          f"loaded = 3 MJPEG viewers + a sink taking 200 ms per frame")
    for pace in ("realtime", "fast"):
        rig = dataclasses.replace(base, sinks=(), ir=dataclasses.replace(base.ir, pace=pace),
                                  vis=dataclasses.replace(base.vis, pace=pace))
        alone, loaded, pictures = [], [], []
        for _ in range(rounds):
            alone.append(measure(rig, seconds)[0])
            fps, got, _ = measure(rig, seconds, viewers=3, slow_ms=200)
            loaded.append(fps)
            pictures += got
        a, b = sorted(alone)[len(alone) // 2], sorted(loaded)[len(loaded) // 2]
        print(f"  {pace:<9} alone {a:6.1f} fps   loaded {b:6.1f} fps   ratio {b / a:5.3f}   "
              f"(medians; rounds alone {', '.join(f'{x:.1f}' for x in alone)}; loaded "
              f"{', '.join(f'{x:.1f}' for x in loaded)}; pictures per viewer {min(pictures)}-{max(pictures)})")
