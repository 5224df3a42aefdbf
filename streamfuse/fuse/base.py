"""The fusion stage's contract: `Fuser`, its `FusionConfig`, and `MODES`, the one registry of modes.

Each mode lives in its own module (`classical.py`, `lite.py`, `spg.py`), which imports only
this file; `streamfuse.fuse.make_fuser` (the package's factory) imports a mode's module when
that mode is built, so torch is loaded only by the modes that need it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from streamfuse.fuse.palettes import PALETTES


@dataclass(frozen=True)
class Mode:
    """One entry of MODES: where a fusion mode's Fuser lives and what it needs.

    Attributes:
        fuser: "module:Class" inside `streamfuse.fuse`, imported when the mode is built.
        needs_weights: no weights ship: the rig must give `fusion.weights` (leave such modes
            out wherever every mode is built as is: an evaluation's default list, the live
            mode choices, tests over all modes).
        network: the `streamfuse.models` module of its trainable network (`streamfuse train
            --model NAME`), or None for a classical mode.
        palette: what the palette colours in this mode: "ir" (the whole IR), "hot" (the hot
            targets, `fuse.isotherm`; the mode keeps the visible colour) or "none".
    """

    fuser: str
    needs_weights: bool = False
    network: str | None = None
    palette: str = "ir"


#: The fusion modes by name: the only registry (the CLI, the rig, live controls and
#: `streamfuse train` all read it).
MODES: dict[str, Mode] = {
    "alpha": Mode("classical:AlphaFuser"),
    "msx": Mode("classical:MsxFuser"),
    "lite": Mode("lite:LiteFuser", network="lite_torch", palette="hot"),
    "pyramid": Mode("classical:PyramidFuser", palette="hot"),
    "spg": Mode("spg:SPGFuser", needs_weights=True, network="spg", palette="none"),
    "c3d": Mode("c3d:C3dFuser", needs_weights=True, network="c3d", palette="none"),
}


def palette_use(mode: str, hot_tint: bool = True) -> str:
    """What the palette does in `mode`, in words for viewers ("colours the IR", ...)."""
    use = MODES[mode].palette
    if use == "ir":
        return "colours the IR"
    if use == "hot":
        return "colours the hot targets" if hot_tint else "off (fusion.hot_tint)"
    return "not used by this mode"
#: The modes that cannot be built from default settings (they need `fusion.weights`).
NEEDS_WEIGHTS = frozenset(name for name, mode in MODES.items() if mode.needs_weights)
#: The modes with a network `streamfuse train` can train.
TRAINABLE = tuple(name for name, mode in MODES.items() if mode.network)

#: Inclusive ranges of the numeric FusionConfig fields.
_RANGES = {"strength": (0.0, 1.0), "detail_radius": (1, 64), "levels": (1, 8)}
#: Where the learned modes that take a `device` run.
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class FusionConfig:
    """How to fuse. Validated on construction, so `FusionConfig(**yaml_dict)` fails early.

    Attributes:
        mode: a key of MODES ("alpha", "msx", "pyramid", "lite", "spg", "c3d").
        palette: a key of PALETTES: the colours of the IR in the modes that colour it ("alpha",
            "msx"); in those that keep the visible colour ("pyramid", "lite"), the colour of
            the hot targets (`hot_tint`, `fuse.isotherm`).
        hot_tint: "pyramid" and "lite" tint the IR's hot targets with the palette (chroma
            only); False: the visible colour everywhere.
        strength: 0..1, how much IR: the IR weight in "alpha" and in the base level of
            "pyramid"; the gain of the visible detail in "msx".
        detail_radius: 1..64 px, the box-blur radius that separates visible detail in "msx".
        levels: 1..8, the number of detail levels in "pyramid" (the base is 1/2**levels size).
        weights: the weights file of a mode that ships none ("spg", "c3d"; see Mode.needs_weights); in a
            rig file, relative to the rig file (`resolved`). None: not set.
        device: "cpu" or "cuda", where "spg" runs (bf16 on cuda).
    """

    mode: str = "lite"
    palette: str = "ironbow"
    hot_tint: bool = True
    strength: float = 0.5
    detail_radius: int = 4
    levels: int = 4
    weights: Path | None = None
    device: str = "cpu"

    def __post_init__(self):
        # Messages start with "field:" so the rig loader can point at the key.
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"mode: expected one of {sorted(MODES)}, got {self.mode!r}")
        if not isinstance(self.palette, str) or self.palette not in PALETTES:
            raise ValueError(f"palette: expected one of {sorted(PALETTES)}, got {self.palette!r}")
        if not isinstance(self.hot_tint, bool):
            raise ValueError(f"hot_tint: expected true or false, got {self.hot_tint!r}")
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            kind = Real if isinstance(low, float) else Integral
            if isinstance(value, bool) or not isinstance(value, kind):
                what = "a number" if kind is Real else "an integer"
                raise ValueError(f"{name}: expected {what} in [{low}, {high}], got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name}: expected a value in [{low}, {high}], got {value!r}")
        if isinstance(self.weights, str):
            object.__setattr__(self, "weights", Path(self.weights))  # frozen: normalise once here
        if self.weights is not None and not isinstance(self.weights, Path):
            raise ValueError(f"weights: expected a file path, got {self.weights!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {list(DEVICES)}, got {self.device!r}")

    def resolved(self, base: Path) -> "FusionConfig":
        """The same config with a relative `weights` path made relative to `base` (the rig's folder)."""
        if self.weights is None or self.weights.is_absolute():
            return self
        return replace(self, weights=Path(base) / self.weights)


class Fuser(ABC):
    """Fuses a registered IR frame with a visible frame. The contract of every mode:

    Inputs (checked with `check_inputs`, ValueError otherwise):
        ir: HxW uint8 (0..255) or uint16 (raw thermal counts), already warped into the
            visible camera's frame; in uint16 frames 0 means "outside the IR field of view".
        vis: HxWx3 BGR uint8, or HxW uint8 from a monochrome camera; same H and W as ir.
        prior: optional, a semantic prior (`streamfuse.priors.Prior`, or anything with an
            `emphasis` map: hxw float32 in [0, 1] at any resolution, stretched over the
            frame) that raises the IR weight where it is high. A fuser derives its weight
            maps from a new prior once and blends to them over a few frames
            (`priors.prior.EmphasisTrack`, the only per-frame state a classical mode keeps); None
            keeps the last prior's maps, or fuses without one if none came yet.

    Output: a new HxWx3 BGR uint8 array of the visible size. `fuse` never modifies its
    inputs and keeps no per-frame state unless its docstring says so: a mode made for video
    may follow its own earlier frames (then `reset()` forgets them; call it between
    unrelated images).
    """

    def __init__(self, cfg: FusionConfig):
        self.cfg = cfg

    def reset(self) -> None:
        """Forget earlier frames (a new video, or unrelated still images). Nothing by default."""

    @abstractmethod
    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        """Return the fused HxWx3 BGR uint8 frame; see the class docstring."""


def check_inputs(ir: np.ndarray, vis: np.ndarray) -> None:
    """Raise ValueError unless (ir, vis) satisfy the Fuser input contract."""
    if not isinstance(ir, np.ndarray) or ir.ndim != 2 or ir.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"fuse: expected ir as an HxW uint8 or uint16 array, got {_describe(ir)}")
    if not isinstance(vis, np.ndarray) or vis.dtype != np.uint8 or not (
        vis.ndim == 2 or (vis.ndim == 3 and vis.shape[2] == 3)
    ):
        raise ValueError(f"fuse: expected vis as an HxW or HxWx3 uint8 array, got {_describe(vis)}")
    if ir.shape[:2] != vis.shape[:2]:
        raise ValueError(
            f"fuse: expected ir and vis of the same HxW (warp the IR into the visible frame first), "
            f"got ir {ir.shape[:2]} and vis {vis.shape[:2]}"
        )
    if ir.size == 0:
        raise ValueError(f"fuse: expected a non-empty image, got shape {ir.shape}")


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"shape {a.shape} dtype {a.dtype}"
    return f"a {type(a).__name__}"
