"""Every picture the pipeline can hand out besides the fused one, as pure functions.

A viewer picks a view (`VIEWS`): the fused picture, one camera, both side by side, or the
fused picture with the thermal view inset (picture in picture). While one camera is lost,
the other is shown alone (`single_camera`) or a NO SIGNAL placeholder (`no_signal`). All
return HxWx3 BGR uint8 of the visible size; none modifies its inputs.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.fuse.base import Fuser
from streamfuse.fuse.palettes import apply_palette
from streamfuse.thermal import ir_to_u8

#: What the output shows: the fused picture, one camera, both side by side, or the fused
#: picture with the thermal view inset ("pip", picture in picture).
VIEWS = ("fused", "ir", "visible", "side-by-side", "pip")
#: The inset of the "pip" view, as a fraction of the frame's width.
PIP_FRACTION = 0.33


def render_view(view: str, fuser: Fuser, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
    """The output picture for `view` (one of VIEWS) from a registered IR frame, a visible
    frame and the current prior, if any (the Fuser input contract)."""
    if view == "fused":
        return _fused(fuser, ir, vis, prior)
    vis_bgr = as_bgr(vis)
    if view == "visible":
        return vis_bgr.copy()
    thermal = apply_palette(ir_to_u8(ir), fuser.cfg.palette)
    if view == "ir":
        return thermal
    if view == "side-by-side":
        return _side_by_side(thermal, vis_bgr)
    if view == "pip":
        return _inset(_fused(fuser, ir, vis, prior), thermal)
    raise ValueError(f"view: expected one of {', '.join(VIEWS)}, got {view!r}")


def _fused(fuser: Fuser, ir: np.ndarray, vis: np.ndarray, prior) -> np.ndarray:
    # The prior is optional in the Fuser contract: leave it out when there is none.
    return fuser.fuse(ir, vis) if prior is None else fuser.fuse(ir, vis, prior)


def as_bgr(vis: np.ndarray) -> np.ndarray:
    """A visible frame as BGR (a monochrome camera's grey repeated); BGR input is returned as is."""
    return vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)


def single_camera(camera: str, image: np.ndarray, palette: str) -> np.ndarray:
    """One camera shown alone while the other is lost: the visible frame as BGR, or a
    registered IR frame (8-bit display levels, or raw counts) coloured with `palette`."""
    return as_bgr(image) if camera == "vis" else apply_palette(ir_to_u8(image), palette)


def no_signal(lost: str, size: tuple[int, int]) -> np.ndarray:
    """A dark placeholder of `size` (w, h) naming the lost camera."""
    w, h = size
    image = np.full((h, w, 3), 32, np.uint8)
    text = f"NO SIGNAL: {lost}"
    scale = max(0.4, w / 640)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.putText(image, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 2, cv2.LINE_AA)
    return image


def frame_region(view: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where the visible frame's pixels sit in the picture of `view`, as (x, y, w, h) of the
    picture (`size` = (w, h)): the whole picture, or the thermal half of side-by-side."""
    w, h = size
    if view != "side-by-side":
        return 0, 0, w, h
    half_w, half_h = w // 2, max(1, round(h / 2))
    return 0, (h - half_h) // 2, half_w, half_h


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Both images at half width, centred vertically on black, in a frame of the same size."""
    h, w = left.shape[:2]
    _, top, half_w, half_h = frame_region("side-by-side", (w, h))
    out = np.zeros_like(left)
    out[top:top + half_h, :half_w] = cv2.resize(left, (half_w, half_h), interpolation=cv2.INTER_AREA)
    out[top:top + half_h, half_w:2 * half_w] = cv2.resize(right, (half_w, half_h), interpolation=cv2.INTER_AREA)
    return out


def _inset(main: np.ndarray, inset: np.ndarray) -> np.ndarray:
    """`inset` scaled to PIP_FRACTION of the width in the top-right corner of `main`, framed."""
    h, w = main.shape[:2]
    iw, ih = max(1, round(w * PIP_FRACTION)), max(1, round(h * PIP_FRACTION))
    margin = max(2, w // 80)
    x0, y0 = w - iw - margin, margin
    main[y0:y0 + ih, x0:x0 + iw] = cv2.resize(inset, (iw, ih), interpolation=cv2.INTER_AREA)
    cv2.rectangle(main, (x0 - 1, y0 - 1), (x0 + iw, y0 + ih), (255, 255, 255), 1)
    return main
