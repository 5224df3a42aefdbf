"""The display sink: a window on the rig's own screen, with an overlay and keys.

The window is Tk (Python's standard tkinter), because the OpenCV this project installs is the
headless build (no libGL needed) and so has no `imshow`. Tk belongs to the thread that made
it: the window is created, updated and destroyed on the sink's own thread (the first frame
creates it; `SinkRunner` closes the sink on that thread), and its key events are handled
there between frames. With the `drop_oldest` queue a slow screen skips frames instead of
holding the pipeline.

Keys (also listed with `h`):
    m mode   v view   p palette   + / - strength   [ / ] parallax nearer / farther
    s snapshot (PNG in the working folder)   space pause   o overlay   h help   q / Esc quit

On a radiometric rig the picture carries the temperature overlay (`overlay.py`: spot meter,
min/max markers, scale bar, isotherm), a click moves the spot meter, and a snapshot also keeps
the raw IR frame and its temperatures (`snapshot.py`).
"""
from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import UsageError
from streamfuse.frames import Frame
from streamfuse.sinks.base import Sink, StreamInfo
from streamfuse.sinks.config import DisplaySinkConfig
from streamfuse.sinks.overlay import draw_temperatures, frame_from_picture
from streamfuse.sinks.snapshot import snapshot_files, snapshot_name

log = logging.getLogger("streamfuse")

#: Overlay statistics are recomputed this often (percentiles cost ~0.1 ms).
STATS_EVERY_S = 0.5
#: How long a message (snapshot saved, key not available) stays on the overlay.
MESSAGE_S = 3.0
#: Strength step of the + and - keys; distance factor of the [ and ] keys.
STRENGTH_STEP = 0.05
DISTANCE_STEP = 1.25
HELP = ("m mode  v view  p palette  +/- strength  [/] distance",
        "s snapshot  space pause  o overlay  h help  q quit")
NO_GUI_HINT = "watch in a browser instead: streamfuse run RIG --serve 127.0.0.1:8080"


def check_gui() -> None:
    """Raise UsageError (one line, pointing at the browser monitor) unless a window can open."""
    try:
        import tkinter
    except ImportError:
        raise UsageError("display: this Python has no GUI toolkit (tkinter; on Debian: apt-get install "
                         f"python3-tk); {NO_GUI_HINT}") from None
    if not os.environ.get("DISPLAY"):
        raise UsageError(f"display: no screen to open a window on ($DISPLAY is not set); {NO_GUI_HINT}")
    try:
        root = tkinter.Tk()
        root.destroy()
    except tkinter.TclError as exc:
        raise UsageError(f"display: cannot open a window on {os.environ['DISPLAY']} ({exc}); {NO_GUI_HINT}") from None


class DisplaySink(Sink):
    name = "display"

    def __init__(self, cfg: DisplaySinkConfig):
        self.cfg = cfg
        self.snapshots: list[Path] = []
        self._root = None
        self._overlay = cfg.overlay
        self._help = False
        self._paused = False
        self._shown: Frame | None = None
        self._message, self._message_until = "", 0.0
        self._stats, self._stats_at = "", 0.0

    def open(self, info: StreamInfo) -> None:
        check_gui()
        self._controls, self._report, self._stop = info.controls, info.report, info.stop
        self._radiometry = info.radiometry
        w, h = info.size
        self._size = (max(1, round(w * self.cfg.scale)), max(1, round(h * self.cfg.scale)))

    def write(self, frame: Frame) -> None:
        if self._root is None:
            self._make_window()
        if not self._paused or self._shown is None:
            self._shown = frame
        self._show(self._compose(self.picture(self._shown)))
        self._root.update()  # draws, and runs the key handlers

    def close(self) -> None:
        root, self._root = self._root, None
        if root is None:
            return
        self._photo = self._label = None
        root.destroy()
        del root
        # Tk objects must die on the thread that made them (Tcl aborts the process otherwise);
        # widgets hold cycles, so collect them here rather than wherever the GC next runs.
        gc.collect()

    def idle(self) -> None:
        if self._root is not None:
            self._root.update()  # keys and redraws while no frame comes

    def state(self) -> dict[str, float]:
        return {"paused": float(self._paused), "snapshots": len(self.snapshots)}

    def _make_window(self) -> None:
        import tkinter

        root = tkinter.Tk()
        root.title(self.cfg.title)
        root.configure(background="black")
        self._label = tkinter.Label(root, borderwidth=0, background="black")
        self._label.pack()
        root.bind("<Key>", self._on_key)
        root.bind("<Button-1>", self._on_click)
        root.protocol("WM_DELETE_WINDOW", self._quit)
        self._root = root

    def _show(self, image: np.ndarray) -> None:
        import tkinter

        # A binary PPM is the one image format Tk reads without Pillow: ~5 ms at 640x480.
        h, w = image.shape[:2]
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        photo = tkinter.PhotoImage(data=b"P6 %d %d 255 " % (w, h) + rgb.tobytes(), format="PPM")
        self._label.configure(image=photo)
        self._photo = photo  # Tk shows it only while Python holds a reference

    def picture(self, frame: Frame) -> np.ndarray:
        """The frame's picture as the window shows it before scaling and text: with the
        temperature overlay on a radiometric rig."""
        if frame.temperatures is None:
            return frame.image
        s = self._controls.settings if self._controls is not None else None
        return draw_temperatures(frame.image, frame.temperatures, s.palette if s else "ironbow",
                                 s.view if s else "fused")

    def _compose(self, image: np.ndarray) -> np.ndarray:
        if image.shape[1] != self._size[0] or image.shape[0] != self._size[1]:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if not (self._overlay or self._help or self._message_active()):
            return image
        lines = []
        if self._overlay:
            lines += [self._settings_line(), self._stats_line()]
        if self._help:
            lines += list(HELP)
        if self._message_active():
            lines.append(self._message)
        return draw_text(image.copy(), [line for line in lines if line])

    def _settings_line(self) -> str:
        if self._controls is None:
            return "paused" if self._paused else ""
        s = self._controls.settings
        parts = [s.mode, s.view, f"{s.palette}: {self._controls.palette_use()}", f"strength {s.strength:.2f}"]
        if s.distance_m is not None:
            parts.append(f"{s.distance_m:g} m")
        if self._paused:
            parts.append("PAUSED")
        return " | ".join(parts)

    def _stats_line(self) -> str:
        now = time.monotonic()
        if self._report is not None and now - self._stats_at >= STATS_EVERY_S:
            self._stats_at = now
            self._stats = overlay_stats(self._report)
        return self._stats

    def _message_active(self) -> bool:
        return bool(self._message) and time.monotonic() < self._message_until

    def _say(self, message: str) -> None:
        self._message, self._message_until = message, time.monotonic() + MESSAGE_S

    def _on_key(self, event) -> None:
        key = event.keysym
        actions = {
            "m": lambda c: c.cycle("mode"), "v": lambda c: c.cycle("view"), "p": lambda c: c.cycle("palette"),
            "plus": lambda c: c.nudge_strength(STRENGTH_STEP), "equal": lambda c: c.nudge_strength(STRENGTH_STEP),
            "KP_Add": lambda c: c.nudge_strength(STRENGTH_STEP),
            "minus": lambda c: c.nudge_strength(-STRENGTH_STEP), "KP_Subtract": lambda c: c.nudge_strength(-STRENGTH_STEP),
            "bracketleft": lambda c: c.scale_distance(1 / DISTANCE_STEP),
            "bracketright": lambda c: c.scale_distance(DISTANCE_STEP),
        }
        if key in actions and self._controls is not None:
            try:
                actions[key](self._controls)
            except ValueError as exc:  # e.g. no parallax model: say so on screen
                self._say(str(exc).split(";")[0])
        elif key == "s":
            self._snapshot()
        elif key == "space":
            self._paused = not self._paused
        elif key == "o":
            self._overlay = not self._overlay
        elif key in ("h", "question"):
            self._help = not self._help
        elif key in ("q", "Escape"):
            self._quit()

    def _on_click(self, event) -> None:
        """Move the spot meter to the clicked point (radiometric rigs)."""
        if self._radiometry is None or self._controls is None:
            return
        spot = frame_from_picture(self._controls.settings.view, (event.x + 0.5) / self._size[0],
                                  (event.y + 0.5) / self._size[1])
        self._controls.update(spot=spot)

    def _snapshot(self) -> None:
        if self._shown is None:
            return
        stem = Path.cwd() / snapshot_name(self._shown)
        try:
            files = snapshot_files(self._shown, self.picture(self._shown), self._radiometry)
            for suffix, data in files.items():
                Path(f"{stem}{suffix}").write_bytes(data)
        except (OSError, ValueError) as exc:
            self._say(f"snapshot failed: cannot write {stem}.png ({getattr(exc, 'strerror', None) or exc})")
            return
        self.snapshots.append(Path(f"{stem}.png"))
        self._say(f"snapshot saved: {stem.name}.png" + (f" (+ {len(files) - 1} files)" if len(files) > 1 else ""))
        log.info("display: snapshot saved to %s.*", stem)

    def _quit(self) -> None:
        self._say("stopping")
        if self._stop is not None:
            self._stop.set()


def overlay_stats(report) -> str:
    """One line of live statistics from a RunReport: fps, latency, skew, drops, prior age."""
    lat = report.latency.summary_ms()["p50"]
    skew = report.sync.skew_summary_ms()["p50"]
    line = f"{report.rate.rate():.1f} fps | latency {lat:.0f} ms | skew {skew:.1f} ms | drops {report.drops}"
    prior_age = getattr(report, "prior_age_s", None)
    if prior_age is not None:
        line += f" | prior {prior_age:.1f} s"
    return line


def draw_text(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """`lines` in the top-left corner of `image` (BGR, changed in place) on a dark band."""
    scale = max(0.4, image.shape[1] / 1400)
    thickness = 1
    (_, text_h), baseline = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    step = text_h + baseline + 4
    width = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for line in lines)
    band = image[:step * len(lines) + 6, :width + 12]
    band //= 3  # darken behind the text, so it reads on a white-hot sky too
    for i, line in enumerate(lines):
        cv2.putText(image, line, (6, 4 + text_h + i * step), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return image
