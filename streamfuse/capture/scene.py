"""A deterministic street scene seen by a thermal and a visible camera: the synthetic rig.

Everything expensive (textures, the IR background warped into IR coordinates, noise banks) is
built once in `SyntheticScene.__init__`; a frame is a copy of a background, a few dozen filled
polygons and a saturating noise add, so it costs about a millisecond. No threads live here.

Convention: pixel coordinates are OpenCV's (x right, y down, pixel centres at integers).
`A_from_B` maps homogeneous B pixels (x, y, 1) to A pixels. Temperatures are apparent kelvin.
IR values are `100 * T` counts for ir_bits=16 (T-linear, like a Boson R or a Lepton 3.5 in
T-linear mode: `thermal.radiometry: tlinear` reads them back) and the fixed linear map
`(T - 240 K) * 255 / 100 K` for ir_bits=8. With `background_k` and `body_k` the IR frame is a
scene of known temperatures (a uniform background, every body at one temperature, no texture),
and `netd_mk=0` leaves out the sensor noise: every count is then exactly `100 * T`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: IR 640x512 -> visible 640x480: scale 0.95, rotation 1 degree, a shift and a little perspective;
#: the warped IR frame covers about 94% of the visible frame.
DEMO_H_VIS_FROM_IR = np.array([
    [0.950380, -0.016974, 26.257364],
    [0.016350, 0.950028, -11.485273],
    [0.000020, -0.000015, 1.000000],
], dtype=np.float64)

_T_LO, _T_HI = 240.0, 340.0   # kelvin span of the 8-bit IR mapping
_SHIFT = 4                     # cv2 fixed-point bits: polygons are drawn with 1/16 px precision
_BANK, _PAD = 2, 64            # noise frames per camera, and slack rows/cols to slide over them

# Materials of the background: day colour (BGR), apparent temperature by day and by night (K).
_SKY, _WALL0, _WALL1, _WALL2, _WINDOW, _LIT, _WALK, _ROAD, _PAINT, _GRASS, _LEAF, _TRUNK, _POLE, _LAMP = range(14)
_COLOUR = np.array([(235, 200, 150), (70, 85, 150), (165, 168, 170), (140, 185, 210), (105, 85, 70),
                    (105, 85, 70), (165, 170, 172), (78, 80, 84), (225, 228, 230), (60, 140, 75),
                    (45, 105, 55), (40, 60, 85), (60, 62, 64), (200, 215, 220)], np.float32)
_TEMP_DAY = np.array([268, 296, 294, 295, 289, 290, 296, 298, 295, 292, 290, 293, 293, 294], np.float32)
_TEMP_NIGHT = np.array([255, 290, 288, 289, 286, 292, 287, 289, 286, 280, 282, 285, 286, 330], np.float32)
_AMBIENT_NIGHT = np.array([0.10, 0.075, 0.06], np.float32)   # bluish moonlight/skyglow, BGR
_SODIUM = np.array([0.35, 0.75, 1.0], np.float32)            # street-lamp colour, BGR


@dataclass(frozen=True)
class Body:
    """One warm moving object at one instant.

    Attributes:
        kind: "person", "vehicle" or "animal".
        polygon: Nx2 float32 outline in visible pixel coordinates.
        temperature: apparent temperature of the bulk of the body in kelvin; hotter parts
            (heads, engines, tyres, exhaust) are drawn on top in IR.
    """

    kind: str
    polygon: np.ndarray
    temperature: float


@dataclass(frozen=True)
class _Actor:
    kind: str
    foot_y: float      # visible px, ground contact line
    scale: float       # shape units -> visible px
    speed: float       # visible px/s, signed
    phase: float       # 0..1, position along the wrapped path at t=0
    colours: tuple     # BGR per part, see _shape
    wobble: float      # px amplitude of the slow sideways drift


def _poly(points, cx, cy, scale, direction):
    p = np.asarray(points, np.float32) * scale
    return np.stack([cx + direction * p[:, 0], cy + p[:, 1]], axis=1).astype(np.float32)


def _octagon(x, y, r):
    a = np.arange(8) * np.pi / 4 + np.pi / 8
    return np.stack([x + r * np.cos(a), y + r * np.sin(a)], axis=1)


def _shape(actor: _Actor, cx: float, cy: float, gait: float, night: bool):
    """Parts of one actor as (polygon Nx2 vis px, BGR or None, T kelvin, emissive), outline first.

    Shape units: a person is 20x60, a vehicle 90x40, an animal 40x23; y=0 is the ground.
    """
    s, d, c = actor.scale, np.sign(actor.speed) or 1.0, actor.colours
    if actor.kind == "person":
        k = 2.2 + 4.5 * abs(np.sin(gait))   # feet apart; >2 keeps the outline a simple polygon
        outline = [(-2.5, -47), (-5, -51), (-5, -57), (-2.5, -60), (2.5, -60), (5, -57), (5, -51),
                   (2.5, -47), (9, -45), (10, -27), (7, -27), (k + 2, 0), (k - 2, 0), (0, -30),
                   (2 - k, 0), (-k - 2, 0), (-7, -27), (-10, -27), (-9, -45)]
        t = (303.0, 307.0) if night else (305.5, 308.5)
        return [(_poly(outline, cx, cy, s, d), c[0], t[0], False),
                (_poly([(-9, -45), (9, -45), (7, -28), (-7, -28)], cx, cy, s, d), c[1], t[0], False),
                (_poly(_octagon(0, -54, 5), cx, cy, s, d), c[2], t[1], False)]
    if actor.kind == "vehicle":
        outline = [(-45, -25), (-26, -27), (-18, -40), (14, -40), (26, -27), (45, -22), (45, -8),
                   (37, -3), (34, 0), (26, 0), (23, -3), (21, -6), (-21, -6), (-23, -3), (-26, 0),
                   (-34, 0), (-37, -3), (-45, -8)]
        lamp = (255, 255, 240) if night else (215, 220, 220)
        return [(_poly(outline, cx, cy, s, d), c[0], 301.0 if night else 306.0, False),
                (_poly([(-23, -27), (-16, -37), (12, -37), (22, -27)], cx, cy, s, d), (90, 70, 60), 285.0, False),
                (_poly([(26, -25), (44, -21), (44, -11), (26, -11)], cx, cy, s, d), None, 330.0, False),
                (_poly(_octagon(30, -7, 7), cx, cy, s, d), (30, 30, 32), 318.0, False),
                (_poly(_octagon(-30, -7, 7), cx, cy, s, d), (30, 30, 32), 318.0, False),
                (_poly([(-47, -9), (-42, -9), (-42, -6), (-47, -6)], cx, cy, s, d), (50, 50, 50), 340.0, False),
                (_poly([(41, -20), (45, -20), (45, -15), (41, -15)], cx, cy, s, d), lamp, 310.0, night),
                (_poly([(-45, -21), (-42, -21), (-42, -15), (-45, -15)], cx, cy, s, d), (40, 40, 220), 305.0, night)]
    outline = [(-20, -17), (-15, -15), (10, -16), (13, -19), (16, -23), (22, -19), (19, -15), (13, -12),
               (13, 0), (10, 0), (9, -8), (-9, -8), (-10, 0), (-13, 0), (-15, -10), (-19, -15)]
    return [(_poly(outline, cx, cy, s, d), c[0], 306.0, False),
            (_poly([(13, -19), (16, -23), (22, -19), (19, -15)], cx, cy, s, d), c[0], 309.0, False)]


def _value_noise(rng, shape, cell):
    """HxW float32 smooth noise in about [-1, 1]: a random grid `cell` px apart, upsampled."""
    h, w = shape
    grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _paint_layout(shape, origin, vis_h, rng):
    """Material labels (HxW uint8) of the street on a canvas whose visible-frame origin is `origin`.

    Returns the labels and the canvas positions (x, y) of the street-lamp heads.
    """
    h, w = shape
    u = vis_h / 480.0

    def y(f):   # rows are fractions of the visible height, so the street scales with vis_size
        return int(round(origin[1] + f * vis_h))
    lab = np.full(shape, _SKY, np.uint8)
    x = 0
    while x < w:
        bw, top = int(rng.integers(70, 160) * u), y(rng.uniform(0.03, 0.25))
        lab[top:y(0.45), x:x + bw] = _WALL0 + rng.integers(3)
        for wy in range(top + int(10 * u), y(0.45) - int(24 * u), int(24 * u)):
            for wx in range(x + int(8 * u), x + bw - int(16 * u), int(20 * u)):
                lab[wy:wy + int(14 * u), wx:wx + int(10 * u)] = _LIT if rng.random() < 0.3 else _WINDOW
        x += bw + int(rng.integers(0, 3) * 12 * u)
    lab[y(0.45):y(0.52)] = _WALK
    lab[y(0.52):y(0.78)] = _ROAD
    lab[y(0.78):y(0.86)] = _WALK
    lab[y(0.86):] = _GRASS
    thick = max(1, int(3 * u))
    lab[y(0.53):y(0.53) + thick] = _PAINT
    lab[y(0.77) - thick:y(0.77)] = _PAINT
    for dx in range(0, w, int(60 * u)):
        lab[y(0.65) - thick // 2:y(0.65) + thick - thick // 2, dx:dx + int(32 * u)] = _PAINT
    for tx in rng.uniform(0, w, max(2, w // int(150 * u))):
        cv2.rectangle(lab, (int(tx - 3 * u), y(0.36)), (int(tx + 3 * u), y(0.48)), int(_TRUNK), -1)
        cv2.ellipse(lab, (int(tx), y(0.33)), (int(26 * u), int(30 * u)), 0, 0, 360, int(_LEAF), -1)
    for bx in rng.uniform(0, w, max(3, w // int(80 * u))):
        cv2.ellipse(lab, (int(bx), y(0.93)), (int(30 * u), int(14 * u)), 0, 180, 360, int(_LEAF), -1)
    lamps = [(int(lx), y(0.27)) for lx in np.arange(rng.uniform(40, 200) * u, w, 220 * u)]
    for lx, ly in lamps:
        cv2.rectangle(lab, (lx - int(2 * u), ly), (lx + int(2 * u), y(0.515)), int(_POLE), -1)
        cv2.ellipse(lab, (lx, ly), (int(8 * u), int(4 * u)), 0, 0, 360, int(_LAMP), -1)
    return lab, lamps


def _night_light(shape, lamps, vis_h):
    """(illumination, glow), HxWx3 float32: ambient light plus a sodium pool under each lamp,
    which multiplies surface colours, and the lamp halos in 0..255 units, which add to them."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pools, halos = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for lx, ly in lamps:
        ground = ly + 0.3 * vis_h
        pools += 0.9 * np.exp(-((xx - lx) / (0.16 * vis_h)) ** 2 - ((yy - ground) / (0.09 * vis_h)) ** 2)
        halos += 255 * np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (0.025 * vis_h) ** 2)
    return _AMBIENT_NIGHT + pools[..., None] * _SODIUM, halos[..., None] * _SODIUM


def _check_size(name, size):
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 32 <= v <= 8192 for v in size))
    if not ok:
        raise ValueError(f"{name} must be (width, height), two ints in 32..8192; got {size!r}")
    return int(size[0]), int(size[1])


def _check_homography(H, ir_size):
    """H normalised to H[2,2]=1; raises unless it is a usable IR -> visible homography."""
    H = np.asarray(H, np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise ValueError(f"H_vis_from_ir must be a finite 3x3 matrix; got shape {H.shape}")
    if not H.any() or abs(np.linalg.det(H / np.linalg.norm(H))) < 1e-12 or abs(H[2, 2]) < 1e-12:
        raise ValueError(f"H_vis_from_ir must be invertible with H[2,2] != 0; got {H.tolist()}")
    H = H / H[2, 2]
    w, h = ir_size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
    if np.any(corners @ H[2] <= 0):
        raise ValueError("H_vis_from_ir sends part of the IR frame to infinity (its perspective row "
                         f"changes sign over the {w}x{h} frame); got {H.tolist()}")
    return H


class SyntheticScene:
    """A street with people, vehicles and a dog, rendered for an IR and a visible camera.

    Every image is a pure function of the constructor arguments, `t_s` (scene time in
    seconds, any finite value; paths wrap) and `seq` (picks the sensor noise). The render
    methods only read state frozen in __init__, so an IR and a visible capture thread may
    share one scene.
    """

    def __init__(self, *, seed: int = 0, night: bool = False, vis_size=(640, 480), ir_size=(640, 512),
                 H_vis_from_ir=DEMO_H_VIS_FROM_IR, ir_bits: int = 16, n_people: int = 4, n_vehicles: int = 2,
                 netd_mk: float = 40.0, background_k: float | None = None, body_k: float | None = None):
        self.vis_size, self.ir_size = _check_size("vis_size", vis_size), _check_size("ir_size", ir_size)
        for name, v in (("seed", seed), ("n_people", n_people), ("n_vehicles", n_vehicles)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v <= 10**9:
                raise ValueError(f"{name} must be a non-negative int; got {v!r}")
        if ir_bits not in (8, 16):
            raise ValueError(f"ir_bits must be 8 or 16; got {ir_bits!r}")
        for name, v, lo, hi in (("netd_mk", netd_mk, 0, 1000), ("background_k", background_k, 200, 400),
                                ("body_k", body_k, 200, 400)):
            if v is not None and not (isinstance(v, (int, float)) and lo <= v <= hi):
                raise ValueError(f"{name} must be a number from {lo} to {hi}; got {v!r}")
        self.seed, self.night, self.ir_bits = int(seed), bool(night), int(ir_bits)
        self.netd_mk, self.background_k, self.body_k = float(netd_mk), background_k, body_k
        self.H_vis_from_ir = _check_homography(H_vis_from_ir, self.ir_size)
        self.H_ir_from_vis = np.linalg.inv(self.H_vis_from_ir)
        (vw, vh), (iw, ih) = self.vis_size, self.ir_size
        corners = np.array([[[0, 0], [iw - 1, 0], [iw - 1, ih - 1], [0, ih - 1]]], np.float64)
        ir_in_vis = cv2.perspectiveTransform(corners, self.H_vis_from_ir)[0]
        # The canvas holds the union of both fields of view, so the IR frame has no empty border.
        lo = np.clip(np.floor(np.minimum(ir_in_vis.min(0), 0)) - 8, -2 * max(vw, vh), 0).astype(int)
        hi = np.clip(np.ceil(np.maximum(ir_in_vis.max(0), (vw - 1, vh - 1))) + 8, 0, 3 * max(vw, vh)).astype(int)
        self._x_range = (float(lo[0]) - 60 * vh / 480, float(hi[0]) + 60 * vh / 480)
        labels, lamps = _paint_layout((hi[1] - lo[1] + 1, hi[0] - lo[0] + 1), -lo, vh, self._rng(2))
        self._build_vis(labels[-lo[1]:-lo[1] + vh, -lo[0]:-lo[0] + vw], [(x + lo[0], y + lo[1]) for x, y in lamps])
        self._build_ir(labels, lo)
        self._actors = self._make_actors(n_people, n_vehicles)
        for frozen in (self._vis_bg, self._light, self._ir_bg, *self._vis_noise, self._ir_noise):
            frozen.setflags(write=False)

    def _rng(self, stream: int, n: int = 0):
        return np.random.default_rng((self.seed, stream, n))

    def _build_vis(self, labels, lamps):
        rng, h, w = self._rng(3), labels.shape[0], labels.shape[1]
        texture = 1 + 0.10 * _value_noise(rng, (h, w), 24) + 0.05 * _value_noise(rng, (h, w), 3)
        img = _COLOUR[labels] * texture[..., None]
        toward_horizon = np.linspace(0.85, 1.1, h, dtype=np.float32)[:, None]
        img *= np.where(labels == _SKY, toward_horizon, 1.0)[..., None]
        self._light = np.ones((h, w, 3), np.float32)
        if self.night:
            self._light, glow = _night_light((h, w), lamps, h)
            img = img * self._light + glow
            img[labels == _LIT] = (110, 190, 235) * texture[labels == _LIT][:, None]
            img[labels == _LAMP] = (200, 240, 255)
        self._vis_bg = np.clip(img, 0, 255).astype(np.uint8)
        sigma, k = (5.0, 16) if self.night else (1.2, 4)
        noise = rng.standard_normal((_BANK, h + _PAD, w + _PAD, 1), np.float32)
        noise = noise + 0.5 * rng.standard_normal(noise.shape[:3] + (3,), np.float32)   # mostly luma
        noise = np.clip(sigma * noise, -k, k).round()
        self._vis_noise = (np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8))

    def _to_ir(self, kelvin):   # IR values (before quantisation) of temperatures in kelvin
        return 100.0 * kelvin if self.ir_bits == 16 else (kelvin - _T_LO) * (255.0 / (_T_HI - _T_LO))

    def _build_ir(self, labels, lo):
        rng, (iw, ih) = self._rng(4), self.ir_size
        temps = (_TEMP_NIGHT if self.night else _TEMP_DAY)[labels] + 0.8 * _value_noise(rng, labels.shape, 32)
        # Clear sky is coldest at the zenith: the air path, and so its emission, grows to the horizon.
        zenith_to_horizon = np.linspace(-4.0, 6.0, labels.shape[0], dtype=np.float32)[:, None]
        temps += np.where(labels == _SKY, zenith_to_horizon, 0.0).astype(np.float32)
        temps = cv2.GaussianBlur(temps, (0, 0), 1.2)   # thermal optics are softer than visible ones
        if self.background_k is not None:
            temps = np.full(labels.shape, self.background_k, np.float32)
        shift = np.array([[1, 0, lo[0]], [0, 1, lo[1]], [0, 0, 1]], np.float64)
        ir = cv2.warpPerspective(self._to_ir(temps), self.H_ir_from_vis @ shift, (iw, ih),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # 16 bits: 40 mK is 4 counts; the 8-bit map has 0.39 K per level.
        dtype, sigma = (np.uint16, self.netd_mk / 10) if self.ir_bits == 16 else (np.uint8, 0.7 * self.netd_mk / 40)
        fpn = rng.normal(0, sigma, iw).astype(np.float32)   # column fixed-pattern noise of microbolometers
        # Noise is added as (noise + k) to a background stored minus k: one saturating cv2.add.
        self._ir_k = k = int(np.ceil(4 * sigma))
        self._ir_bg = np.clip(np.round(ir + fpn - k), 0, np.iinfo(dtype).max).astype(dtype)
        noise = sigma * rng.standard_normal((_BANK, ih + _PAD, iw + _PAD), np.float32)
        self._ir_noise = (np.clip(noise, -k, k) + k).round().astype(dtype)

    def _make_actors(self, n_people, n_vehicles):
        rng, vh, u = self._rng(5), self.vis_size[1], self.vis_size[1] / 480.0
        actors = []
        for _ in range(n_people):
            near = rng.random() < 0.5
            colours = (tuple(rng.integers(20, 140, 3).tolist()), tuple(rng.integers(30, 230, 3).tolist()),
                       tuple((np.array([120, 160, 210]) * rng.uniform(0.4, 1.0)).astype(int).tolist()))
            scale = u * (1.0 if near else 0.75)
            actors.append(_Actor("person", vh * (0.835 if near else 0.505), scale,
                                 rng.choice((-1, 1)) * rng.uniform(28, 45) * scale, rng.random(), colours, 3 * scale))
        paints = ((40, 40, 200), (160, 90, 30), (235, 235, 235), (180, 180, 175), (30, 30, 30), (50, 90, 40))
        lane_speed = rng.uniform(70, 120, 2) * u
        for i in range(n_vehicles):
            lane, same_lane = i % 2, (n_vehicles + 1 - i % 2) // 2
            scale = u * (1.0 if lane else 0.85)
            # Vehicles in one lane share a speed and even spacing so they never drive through each other.
            phase = (i // 2 + rng.uniform(0, 0.3)) / same_lane
            actors.append(_Actor("vehicle", vh * (0.755 if lane else 0.64), scale,
                                 (1 if lane else -1) * lane_speed[lane] * scale, phase,
                                 (paints[rng.integers(len(paints))],), 0.0))
        dog = _Actor("animal", vh * 0.95, 0.9 * u, rng.choice((-1, 1)) * rng.uniform(30, 50) * u,
                     rng.random(), ((40, 70, 110),), 6 * u)
        return actors + [dog]

    def _posed(self, t_s: float):
        """Parts of every actor at time t_s, far to near so nearer bodies are drawn on top."""
        t = float(t_s)
        if not np.isfinite(t):
            raise ValueError(f"t_s must be a finite number of seconds; got {t_s!r}")
        x_lo, x_hi = self._x_range
        posed = []
        for i, a in enumerate(self._actors):
            cx = x_lo + (a.phase * (x_hi - x_lo) + a.speed * t) % (x_hi - x_lo)
            cy = a.foot_y + a.wobble * np.sin(2 * np.pi * t / (7.0 + 2 * i) + 3 * a.phase)
            gait = abs(a.speed) * t / (12 * a.scale) * np.pi   # one leg cycle per ~24 shape units walked
            posed.append((cy, a.kind, _shape(a, cx, cy, gait, self.night)))
        posed.sort(key=lambda p: p[0])
        return posed

    def bodies(self, t_s: float) -> list[Body]:
        """The bodies at scene time t_s (seconds), far to near, outlines in visible pixels."""
        return [Body(kind, parts[0][0], parts[0][2]) for _, kind, parts in self._posed(t_s)]

    def _noise_window(self, camera: int, seq: int, bank):
        if not isinstance(seq, (int, np.integer)) or seq < 0:
            raise ValueError(f"seq must be a non-negative int; got {seq!r}")
        i, dy, dx = self._rng(camera, int(seq)).integers(0, (_BANK, _PAD, _PAD))
        w, h = self.vis_size if camera == 0 else self.ir_size
        return [b[i, dy:dy + h, dx:dx + w] for b in bank]

    def render_vis(self, t_s: float, seq: int) -> np.ndarray:
        """HxWx3 BGR uint8 visible frame of size vis_size at scene time t_s."""
        img = self._vis_bg.copy()
        h, w = img.shape[:2]
        for cy, _, parts in self._posed(t_s):
            light = self._light[int(np.clip(cy, 0, h - 1)), int(np.clip(parts[0][0][:, 0].mean(), 0, w - 1))]
            for poly, bgr, _, emissive in parts:
                if bgr is not None:
                    colour = bgr if emissive or not self.night else tuple((np.array(bgr) * light).tolist())
                    cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], colour, cv2.LINE_AA, _SHIFT)
        plus, minus = self._noise_window(0, seq, self._vis_noise)
        cv2.add(img, plus, dst=img)
        return cv2.subtract(img, minus, dst=img)

    def render_ir(self, t_s: float, seq: int) -> np.ndarray:
        """HxW IR frame of size ir_size: uint16 counts (ir_bits=16) or uint8 (ir_bits=8)."""
        img = self._ir_bg.copy()
        posed = self._posed(t_s)
        parts = [part for _, _, body_parts in posed for part in body_parts]
        # One perspectiveTransform for every vertex of the frame, then split back into polygons.
        flat = cv2.perspectiveTransform(np.concatenate([p[0] for p in parts])[None].astype(np.float64),
                                        self.H_ir_from_vis)[0]
        ends = np.cumsum([len(p[0]) for p in parts])
        for (_, _, temp, _), pts in zip(parts, np.split(flat, ends[:-1])):
            value = float(round(self._to_ir(temp if self.body_k is None else self.body_k))) - self._ir_k
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], value, cv2.LINE_8, _SHIFT)
        (noise,) = self._noise_window(1, seq, (self._ir_noise,))
        return cv2.add(img, noise, dst=img)

    def body_mask_vis(self, t_s: float) -> np.ndarray:
        """HxW bool mask in visible pixels, True on every body outline at time t_s."""
        mask = np.zeros(self.vis_size[::-1], np.uint8)
        for body in self.bodies(t_s):
            cv2.fillPoly(mask, [np.round(body.polygon * 16).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
        return mask.astype(bool)
