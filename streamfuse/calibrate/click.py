"""Picking point pairs by clicking, in a Tk window (the OpenCV installed is headless).

The window shows the IR image (left) beside the visible one (right), both scaled to one
height. Click a feature in the IR image, then the same feature in the visible image; repeat
for at least four features spread over the frame. Keys: u undoes the last click, Enter
finishes, Esc cancels. Coordinates are converted back to each image's own pixels
(pixel-centre convention, see geometry.py).
"""
from __future__ import annotations

import base64
import os

import cv2
import numpy as np

from streamfuse.calibrate.board import to_gray8
from streamfuse.errors import UsageError

#: Height in screen pixels the two images are shown at (at most).
VIEW_HEIGHT = 600
INSTRUCTIONS = "click a feature in IR (left), then the same in visible (right); u undo, Enter done, Esc cancel"
COLOURS = ("#ff4040", "#40ff40", "#4080ff", "#ffff40", "#ff40ff", "#40ffff")


def gui_problem() -> str | None:
    """Why no window can open here, or None."""
    try:
        import tkinter
    except ImportError:
        return "this Python has no GUI toolkit (tkinter; on Debian: apt-get install python3-tk)"
    if not os.environ.get("DISPLAY"):
        return "there is no screen to open a window on ($DISPLAY is not set)"
    return None


class PointPicker:
    """The window; `run()` returns the clicked pairs as (IR Nx2, visible Nx2)."""

    def __init__(self, ir: np.ndarray, vis: np.ndarray):
        import tkinter

        problem = gui_problem()
        if problem:
            raise UsageError(f"click: {problem}; pick the pairs in any image viewer instead and give them "
                             "in a file: streamfuse calibrate points FILE.csv (x_ir,y_ir,x_vis,y_vis per line)")
        try:
            self.root = tkinter.Tk()
        except tkinter.TclError as exc:
            raise UsageError(f"click: cannot open a window on {os.environ.get('DISPLAY')} ({exc})") from None
        self.root.title(f"streamfuse calibrate: {INSTRUCTIONS}")
        self.scales = [min(1.0, VIEW_HEIGHT / img.shape[0]) for img in (ir, vis)]
        panels = [cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
                  for img, s in zip((cv2.cvtColor(to_gray8(ir), cv2.COLOR_GRAY2BGR), vis), self.scales)]
        height = max(p.shape[0] for p in panels)
        self.offset = panels[0].shape[1] + 8   # x where the visible panel starts
        canvas_image = np.zeros((height, self.offset + panels[1].shape[1], 3), np.uint8)
        canvas_image[:panels[0].shape[0], :panels[0].shape[1]] = panels[0]
        canvas_image[:panels[1].shape[0], self.offset:] = panels[1]
        self.photo = tkinter.PhotoImage(data=base64.b64encode(cv2.imencode(".png", canvas_image)[1]))
        self.canvas = tkinter.Canvas(self.root, width=canvas_image.shape[1], height=height, highlightthickness=0)
        self.canvas.create_image(0, 0, image=self.photo, anchor="nw")
        self.canvas.pack()
        self.status = tkinter.Label(self.root, text=INSTRUCTIONS, anchor="w")
        self.status.pack(fill="x")
        self.sizes = [(img.shape[1], img.shape[0]) for img in (ir, vis)]
        self.ir_points: list[tuple[float, float]] = []
        self.vis_points: list[tuple[float, float]] = []
        self.done = False
        self.canvas.bind("<Button-1>", lambda e: self.click(e.x, e.y))
        self.root.bind("<Key-u>", lambda e: self.undo())
        self.root.bind("<Return>", lambda e: self.finish(True))
        self.root.bind("<Escape>", lambda e: self.finish(False))
        self.root.protocol("WM_DELETE_WINDOW", lambda: self.finish(False))

    def click(self, x: int, y: int) -> None:
        """A click at canvas pixel (x, y): the next IR point, or the visible point that pairs it."""
        want_ir = len(self.ir_points) == len(self.vis_points)
        panel = 0 if x < self.offset else 1
        if panel != (0 if want_ir else 1):
            self.status.config(text=f"now click in the {'IR (left)' if want_ir else 'visible (right)'} image")
            return
        s = self.scales[panel]
        point = ((x - panel * self.offset + 0.5) / s - 0.5, (y + 0.5) / s - 0.5)
        if not (0 <= point[0] <= self.sizes[panel][0] - 1 and 0 <= point[1] <= self.sizes[panel][1] - 1):
            return
        (self.ir_points if want_ir else self.vis_points).append(point)
        colour = COLOURS[(len(self.ir_points) - 1) % len(COLOURS)]
        self.canvas.create_oval(x - 4, y - 4, x + 4, y + 4, outline=colour, width=2, tags="marks")
        self.canvas.create_text(x + 10, y - 10, text=str(len(self.ir_points)), fill=colour, tags="marks")
        self.status.config(text=f"{len(self.vis_points)} pairs; {INSTRUCTIONS}")

    def undo(self) -> None:
        if len(self.ir_points) > len(self.vis_points):
            self.ir_points.pop()
        elif self.vis_points:
            self.vis_points.pop()
        for item in self.canvas.find_withtag("marks")[-2:]:
            self.canvas.delete(item)

    def finish(self, accept: bool) -> None:
        self.done = accept
        self.root.quit()

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        """Show the window until Enter (the pairs) or Esc (UsageError)."""
        try:
            self.root.mainloop()
        finally:
            self.root.destroy()
        if not self.done:
            raise UsageError("click: cancelled; no calibration written")
        n = len(self.vis_points)
        ir = np.array(self.ir_points[:n], np.float64).reshape(-1, 2)
        return ir, np.array(self.vis_points, np.float64).reshape(-1, 2)
