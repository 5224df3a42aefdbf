"""Registration: warp the IR image into the visible camera's pixel frame.

Convention: pixel (x, y) is the centre of column x, row y, with (0, 0) the centre of the
top-left pixel (OpenCV's convention). `H_vis_from_ir` maps homogeneous IR pixel coordinates
to visible pixel coordinates: p_vis ~ H_vis_from_ir @ [x_ir, y_ir, 1]. Pixels of the visible
frame that the IR camera does not see are 0 after warping. (The geometry, parallax model
included, is in `geometry.py`; calibration files in `calibration.py`.)

`warp_ir_to_vis` is the pure function; `Registrar` holds the current mapping and warps every
frame with it on one of two backends: `cpu` (OpenCV's vectorised `warpPerspective`, 0.3 ms for
a 640x512 16-bit frame, faster than `remap` with precomputed maps) or `gpu` (cupy,
`gpu.py`: one upload per frame, bilinear on the device, handed to torch through
DLPack). The mapping can change while running: `set_distance` (the parallax model's working
distance) and `refine_to` (live refinement) may be called from any thread and take effect at
the next frame, on the thread that warps, which is the only one touching the GPU.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from streamfuse.errors import RigError
from streamfuse.register.calibration import Calibration
from streamfuse.register.geometry import (
    DISTANCE_PRESETS,
    ParallaxModel,
    ir_pixels_of_vis_pixels,
    normalized,
    undistorted_rays,
)


def warp_ir_to_vis(ir: np.ndarray, H_vis_from_ir: np.ndarray, vis_size: tuple[int, int]) -> np.ndarray:
    """Resample `ir` (HxW, uint8 or uint16) onto the visible frame of `vis_size` (w, h)."""
    return cv2.warpPerspective(ir, H_vis_from_ir, vis_size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def remap_ir_to_vis(ir: np.ndarray, ir_xy: np.ndarray) -> np.ndarray:
    """Resample `ir` at the IR pixel `ir_xy[y, x]` (HxWx2 float32) of every visible pixel."""
    return cv2.remap(ir, ir_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@dataclass(frozen=True)
class RegistrationConfig:
    """How IR frames are aligned (rig key `registration`)."""

    #: auto: the GPU when cupy sees a CUDA device, else the CPU; gpu: the GPU or an error.
    backend: Literal["auto", "cpu", "gpu"] = "auto"
    #: Working distance of the parallax model: metres, or near / mid / far / infinity.
    #: null: the calibration file's own `parallax.distance_m`.
    distance: float | str | None = None
    #: Re-estimate the alignment from the scene in the background and correct small drift.
    refine: bool = False
    #: Seconds between two background estimates.
    refine_every_s: float = 10.0
    #: Least confidence (0..1, see targetfree.py) an estimate needs to be applied.
    refine_min_confidence: float = 0.3
    #: Largest correction applied, in visible pixels at the IR frame's corners: a bigger jump
    #: is a wrong match, not drift.
    refine_max_px: float = 10.0

    def __post_init__(self):
        if isinstance(self.distance, str) and self.distance not in DISTANCE_PRESETS:
            raise ValueError(f"distance: expected metres or one of {', '.join(DISTANCE_PRESETS)}, "
                             f"got {self.distance!r}")
        if isinstance(self.distance, (int, float)) and not self.distance > 0:
            raise ValueError(f"distance: expected metres > 0, got {self.distance}")
        for name, low, high in (("refine_every_s", 0.5, 3600), ("refine_min_confidence", 0, 1),
                                ("refine_max_px", 0.1, 500)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name}: expected a value from {low} to {high}, got {getattr(self, name)}")

    @property
    def distance_m(self) -> float | None:
        return DISTANCE_PRESETS[self.distance] if isinstance(self.distance, str) else self.distance


def gpu_problem() -> str | None:
    """Why the GPU backend cannot run here, or None when it can."""
    try:
        import cupy  # optional extra [gpu]
    except ImportError:
        return "cupy is not installed"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy raises CUDARuntimeError and others without a driver
        return f"cupy sees no CUDA device ({str(exc).splitlines()[0][:80]})"
    return None if count > 0 else "cupy sees no CUDA device"


def resolve_backend(requested: str) -> str:
    """'cpu' or 'gpu' for a rig's `registration.backend`; RigError when `gpu` cannot run."""
    if requested == "cpu":
        return "cpu"
    problem = gpu_problem()
    if problem is None:
        return "gpu"
    if requested == "gpu":
        raise RigError(f"registration.backend: gpu, but {problem}; install it with "
                       "pip install 'streamfuse[gpu]' on a machine with an NVIDIA GPU, or set backend: auto")
    return "cpu"


def describe_registration(cfg: RegistrationConfig, cal: Calibration | None) -> str:
    """One line for `streamfuse check`: the backend a run will use, and the geometry."""
    problem = gpu_problem() if cfg.backend != "cpu" else None
    if cfg.backend == "cpu" or (problem and cfg.backend == "auto"):
        backend = f"cpu (auto: {problem})" if problem else "cpu"
    else:
        backend = f"gpu UNAVAILABLE, `run` will refuse ({problem})" if problem else "gpu"
    geometry = "fixed homography" if cal is None or cal.parallax is None else \
        f"parallax model at {cfg.distance_m or cal.parallax.distance_m:g} m"
    return f"{backend}, {geometry}{', live refinement' if cfg.refine else ''}"


class Registrar:
    """Warps IR frames of `ir_size` into the visible frame of `vis_size`.

    Args:
        H_vis_from_ir: the mapping (at `parallax.distance_m` when a parallax model is given).
        parallax: intrinsics and extrinsics; makes the working distance adjustable.
        backend: "cpu" or "gpu" (see `resolve_backend`).
        distance_m: the working distance to start with (default: the model's own).
    """

    def __init__(self, H_vis_from_ir: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int], *,
                 parallax: ParallaxModel | None = None, backend: str = "cpu", distance_m: float | None = None):
        self.ir_size = tuple(ir_size)
        self.vis_size = tuple(vis_size)
        self.parallax = parallax
        self.backend = backend
        self._H_at_model = normalized(H_vis_from_ir)
        self._lock = threading.Lock()
        self._distance = (distance_m or parallax.distance_m) if parallax else None
        self._correction = np.eye(3)   # H_vis_from_vis from live refinement (refine_to)
        self._changed = True
        self._vis_rays = None          # cached undistorted visible rays (lens distortion only)
        self._refiner = None
        self._build()

    @classmethod
    def from_calibration(cls, cal: Calibration, cfg: RegistrationConfig | None = None) -> "Registrar":
        """The registrar a rig asks for: backend resolved, distance set, refinement started."""
        cfg = cfg or RegistrationConfig(backend="cpu")
        if cfg.distance_m is not None and cal.parallax is None:
            raise RigError("registration.distance: the calibration has no parallax model; add `parallax:` "
                           "to it (see calibration/README.md) or remove the distance")
        registrar = cls(cal.H_vis_from_ir, cal.ir_size, cal.vis_size, parallax=cal.parallax,
                        backend=resolve_backend(cfg.backend), distance_m=cfg.distance_m)
        if cfg.refine:
            from streamfuse.register.refine import LiveRefiner

            registrar._refiner = LiveRefiner(registrar, cfg.refine_every_s, cfg.refine_min_confidence,
                                             cfg.refine_max_px)
        return registrar

    @property
    def distance_m(self) -> float | None:
        """The working distance in metres (math.inf: far away); None without a parallax model."""
        return self._distance

    @property
    def H_vis_from_ir(self) -> np.ndarray:
        """The mapping in effect (or about to be): correction, distance and calibration."""
        with self._lock:
            return self._mapping(self._distance, self._correction)

    def set_distance(self, distance_m: float) -> None:
        """Align for objects `distance_m` metres away (math.inf allowed) from the next frame on;
        ValueError without a parallax model or for a distance <= 0."""
        if self.parallax is None:
            raise ValueError("distance_m: this calibration has no parallax model (a fixed homography)")
        if not distance_m > 0:
            raise ValueError(f"distance_m: expected metres > 0, got {distance_m}")
        with self._lock:
            self._distance, self._changed = float(distance_m), True

    def refine_to(self, H_vis_from_ir: np.ndarray, based_on: np.ndarray) -> bool:
        """Make the mapping `H_vis_from_ir` from the next frame on (live refinement), through a
        correction that survives later distance changes; False, changing nothing, if the
        mapping is no longer `based_on` (the distance changed while it was estimated)."""
        with self._lock:
            if not np.allclose(self._mapping(self._distance, self._correction), normalized(based_on)):
                return False
            base = self._mapping(self._distance, np.eye(3))
            self._correction, self._changed = normalized(H_vis_from_ir @ np.linalg.inv(base)), True
            return True

    def warp(self, ir: np.ndarray) -> np.ndarray:
        """`ir` in the visible frame, in host memory; the same array when the cameras coincide."""
        self._prepare(ir)
        if self.identity:
            return ir
        if self._device is not None:
            return self._device.warp(ir).get()
        if self._ir_xy is not None:
            return remap_ir_to_vis(ir, self._ir_xy)
        return warp_ir_to_vis(ir, self._H, self.vis_size)

    def warp_torch(self, ir: np.ndarray):
        """`ir` in the visible frame as a torch tensor, without a copy: on the GPU for the gpu
        backend (the cupy result through DLPack), else sharing the host array's memory."""
        import torch  # optional extra [learn]

        if self.backend == "cpu":
            return torch.from_dlpack(np.ascontiguousarray(self.warp(ir)))
        self._prepare(ir)
        if self._device is None:   # the cameras coincide: only the upload
            import cupy

            return torch.from_dlpack(cupy.asarray(ir))
        return torch.from_dlpack(self._device.warp(ir))

    def observe(self, ir: np.ndarray, vis: np.ndarray) -> None:
        """Offer a raw pair to live refinement (a no-op unless the rig enables it)."""
        if self._refiner is not None:
            self._refiner.offer(ir, vis)

    def close(self) -> bool:
        """Stop live refinement's thread, if any; False if it did not stop. Never raises."""
        return self._refiner is None or self._refiner.stop()

    def _prepare(self, ir: np.ndarray) -> None:
        """Check the frame's size and apply a pending change of the mapping."""
        if (ir.shape[1], ir.shape[0]) != self.ir_size:
            raise ValueError(f"IR frame is {ir.shape[1]}x{ir.shape[0]}, registration expects "
                             f"{self.ir_size[0]}x{self.ir_size[1]}")
        if self._changed:
            self._build()

    def _mapping(self, distance: float | None, correction: np.ndarray) -> np.ndarray:
        H = self._H_at_model
        if self.parallax is not None and distance != self.parallax.distance_m:
            # The model's change from its own distance, applied to the calibrated mapping.
            H = self.parallax.H_vis_from_ir(distance) @ np.linalg.inv(
                self.parallax.H_vis_from_ir(self.parallax.distance_m)) @ H
        return normalized(correction @ H)

    def _build(self) -> None:
        """Recompute what warping needs after a change (on the warping thread)."""
        with self._lock:
            distance, correction, self._changed = self._distance, self._correction, False
        self._H = self._mapping(distance, correction)
        self._ir_xy = None
        if self.parallax is not None and self.parallax.distorted:
            self._ir_xy = self._distorted_map(distance, correction)
        self.identity = self._ir_xy is None and self.ir_size == self.vis_size and np.allclose(self._H, np.eye(3))
        self._device = None
        if self.backend == "gpu" and not self.identity:
            import cupy  # optional extra [gpu]; resolve_backend checked it

            from streamfuse.register.gpu import DeviceWarper
            self._device = DeviceWarper(cupy, self.ir_size, self.vis_size, self._H, self._ir_xy)

    def _distorted_map(self, distance: float, correction: np.ndarray) -> np.ndarray:
        model = self.parallax
        if np.allclose(correction, np.eye(3)):
            if self._vis_rays is None:
                self._vis_rays = undistorted_rays(model.K_vis, model.dist_vis, self.vis_size)
            rays = self._vis_rays
        else:
            rays = undistorted_rays(model.K_vis, model.dist_vis, self.vis_size, np.linalg.inv(correction))
        return ir_pixels_of_vis_pixels(model, distance, rays).astype(np.float32)
