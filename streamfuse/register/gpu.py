"""The GPU registration backend: bilinear warping on the device with cupy.

The code is written against an array module `xp` (cupy on the GPU; numpy in the tests, which
run the very same arithmetic on machines without CUDA and compare it with OpenCV's), so that
what runs on the device is what CI checks.

Convention: the same as `cv2.warpPerspective(..., INTER_LINEAR, BORDER_CONSTANT, 0)` (see
register.py). Each visible pixel p reads the IR image at X = H_ir_from_vis p (pixel centres at
integer coordinates), blending the four pixels around X with weights (1 - fx, fx) x (1 - fy, fy),
where a neighbour outside the IR frame counts as 0; a pixel whose four neighbours are all
outside is 0. Coordinates are computed once per mapping in float64; per frame, the blend runs
in float32 and rounds to the nearest integer, like OpenCV, so the two agree within one grey
level (OpenCV rounds its own float32 coordinates a little differently).

Per frame: one host-to-device copy into a zero-bordered buffer (the border supplies the zeros
outside the frame, so no pixel needs a bounds test), four gathers and the blend.
"""
from __future__ import annotations

import numpy as np


class DeviceWarper:
    """Warps IR frames into the visible frame on the device of array module `xp`.

    Args:
        xp: cupy (or numpy).
        ir_size, vis_size: (width, height).
        H_vis_from_ir: the mapping, used unless `ir_xy` is given.
        ir_xy: optional HxWx2 IR pixel read at each visible pixel (a lens-distortion map); NaN
            for none.
    """

    def __init__(self, xp, ir_size: tuple[int, int], vis_size: tuple[int, int],
                 H_vis_from_ir: np.ndarray | None = None, ir_xy: np.ndarray | None = None):
        self.xp = xp
        self.ir_size, self.vis_size = tuple(ir_size), tuple(vis_size)
        if ir_xy is not None:
            X = xp.asarray(ir_xy[..., 0], dtype=xp.float64)
            Y = xp.asarray(ir_xy[..., 1], dtype=xp.float64)
        else:
            X, Y = self._coordinates(np.linalg.inv(np.asarray(H_vis_from_ir, np.float64)))
        w, h = self.ir_size
        inside = (X > -1) & (X < w) & (Y > -1) & (Y < h)   # False for NaN too
        X, Y = xp.where(inside, X, 0.0), xp.where(inside, Y, 0.0)
        x0, y0 = xp.floor(X), xp.floor(Y)
        stride = w + 2   # the padded buffer has one zero pixel on every side
        index = ((y0 + 1) * stride + (x0 + 1)).astype(xp.int64 if (w + 2) * (h + 2) > 2**31 - 1 else xp.int32)
        # Outside: index 0 is the padded buffer's corner (a zero) with weight 1.
        self._index = xp.where(inside, index, 0)
        self._fx = xp.where(inside, X - x0, 0.0).astype(xp.float32)
        self._fy = xp.where(inside, Y - y0, 0.0).astype(xp.float32)
        self._stride = stride
        self._padded = None

    def _coordinates(self, H_ir_from_vis: np.ndarray):
        xp = self.xp
        vw, vh = self.vis_size
        xs = xp.arange(vw, dtype=xp.float64)[None, :]
        ys = xp.arange(vh, dtype=xp.float64)[:, None]
        M = [float(v) for v in H_ir_from_vis.ravel()]
        W = M[6] * xs + M[7] * ys + M[8]
        with np.errstate(divide="ignore", invalid="ignore"):
            X = xp.where(W > 0, (M[0] * xs + M[1] * ys + M[2]) / W, xp.nan)
            Y = xp.where(W > 0, (M[3] * xs + M[4] * ys + M[5]) / W, xp.nan)
        return X, Y

    def warp(self, ir: np.ndarray):
        """`ir` (HxW uint8 or uint16, host memory) in the visible frame, on the device."""
        xp = self.xp
        w, h = self.ir_size
        if ir.shape != (h, w):
            raise ValueError(f"IR frame is {ir.shape[1]}x{ir.shape[0]}, the warp expects {w}x{h}")
        if self._padded is None or self._padded.dtype != ir.dtype:
            self._padded = xp.zeros((h + 2, w + 2), dtype=ir.dtype)
        self._padded[1:-1, 1:-1] = xp.asarray(ir)   # the one upload
        flat = self._padded.ravel()
        i = self._index
        a, b = flat[i].astype(xp.float32), flat[i + 1].astype(xp.float32)
        c, d = flat[i + self._stride].astype(xp.float32), flat[i + self._stride + 1].astype(xp.float32)
        top = a + (b - a) * self._fx
        value = top + (c + (d - c) * self._fx - top) * self._fy
        top_value = float(np.iinfo(ir.dtype).max)
        return xp.clip(xp.rint(value), 0, top_value).astype(ir.dtype)
