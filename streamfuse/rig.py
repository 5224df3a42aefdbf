"""Rig files: one YAML file describes the two cameras, their alignment, fusion and outputs.

`load_rig(path)` returns a `RigConfig` or raises `RigError` with one line naming the file,
the key, what was expected and how to fix it. Every path in a rig file is relative to the
rig file's folder. Top-level keys:

    name: text                 # shown in logs; defaults to the file name
    sources: {ir: SOURCE, vis: SOURCE}   # SOURCE has `type: synthetic | replay | uvc | network | archive`
    scene: {seed, night, people, vehicles}   # only for synthetic sources
    calibration: FILE | null   # H_vis_from_ir; null when both cameras already coincide
    registration: {backend, distance, refine, ...}   # optional: GPU warp, parallax distance
    sync: {tolerance_ms}
    live: {max_age_ms, down_after_ms, on_loss}   # optional: stale frames, lost cameras
    thermal: {agc, plateau, max_gain, tail_reject, roi, smoothing_s, range,   # optional: IR display AGC
              radiometry, tlinear_resolution, linear_gain, linear_offset_c, emissivity, reflected_c, isotherm_c}
    fusion: {mode, palette, hot_tint, strength, detail_radius, levels}
    sinks: [{type: mp4, path, ...}, {type: "null"}]
    priors: {clip, dino, prompts, every_frames, ...}   # optional: CLIP/DINO semantic priors
                               # (dino.model not named: DINO ViT-B/16 for spg, ViT-S/16 otherwise)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from streamfuse.capture import SOURCE_TYPES, SourceConfig
from streamfuse.capture.liveness import LiveConfig
from streamfuse.capture.replay import ReplayConfig
from streamfuse.capture.synthetic import SceneConfig, SyntheticConfig
from streamfuse.config import (
    ConfigError,
    YamlError,
    build,
    check_range,
    file_path,
    not_regular,
    read_yaml,
    suggest,
)
from streamfuse.errors import RigError
from streamfuse.fuse import FusionConfig
from streamfuse.priors.config import PriorConfig, dino_for_mode, resolve_paths
from streamfuse.register.calibration import Calibration, load_calibration
from streamfuse.register.registrar import RegistrationConfig
from streamfuse.sinks import SINK_TYPES, Mp4SinkConfig, SinkConfig
from streamfuse.thermal import ThermalConfig

#: Fast replay: stamps of the two cameras further apart than this would never pair in practice.
MAX_FAST_SKEW_MS = 10_000.0
TOP_LEVEL_KEYS = ("name", "sources", "scene", "calibration", "registration", "sync", "fusion", "sinks", "priors",
                  "live", "thermal")


@dataclass(frozen=True)
class SyncConfig:
    """How IR and visible frames are paired (rig key `sync`)."""

    #: A visible frame whose nearest IR frame is further away than this is dropped.
    tolerance_ms: float = 20.0

    def __post_init__(self):
        check_range("tolerance_ms", self.tolerance_ms, 0.1, 1000)


@dataclass(frozen=True)
class RigConfig:
    path: Path
    name: str
    ir: SourceConfig
    vis: SourceConfig
    calibration_path: Path | None
    calibration: Calibration | None
    scene: SceneConfig = field(default_factory=SceneConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    sinks: tuple[SinkConfig, ...] = ()
    #: Semantic priors: on when the rig has a `priors:` section (empty: the defaults).
    priors: PriorConfig | None = None
    #: Whether the rig names `priors.dino.model`; if not, the model follows the fusion mode
    #: (`priors.config.dino_for_mode`), also after `with_mode`.
    dino_named: bool = False
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)

    def with_mode(self, mode: str) -> "RigConfig":
        """The same rig with another fusion mode (the CLI's --mode)."""
        try:
            fusion = dataclasses.replace(self.fusion, mode=mode)
        except ValueError as exc:
            raise RigError(f"--mode: {str(exc).split(':', 1)[-1].strip()}") from None
        return dataclasses.replace(self, fusion=fusion, priors=_mode_dino(self.priors, mode, self.dino_named))

    def with_recording(self, path: Path) -> "RigConfig":
        """The same rig with one more MP4 sink (the CLI's --record)."""
        return dataclasses.replace(self, sinks=self.sinks + (Mp4SinkConfig(path=path),))

    def with_sink(self, sink: SinkConfig) -> "RigConfig":
        """The same rig with one more sink (the CLI's --display and --serve)."""
        return dataclasses.replace(self, sinks=self.sinks + (sink,))


def load_rig(path: str | Path) -> RigConfig:
    path = Path(path)
    if not path.is_file():
        raise RigError(f"{path}: rig file not found; give the path of a rig YAML file (see rigs/)")
    try:
        data = read_yaml(path)
    except YamlError as exc:
        raise RigError(f"{path}: {exc}") from None
    try:
        return _parse(path, data)
    except ConfigError as exc:
        raise RigError(f"{path}: {exc}") from None


def _parse(path: Path, data: object) -> RigConfig:
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(str(key), f"unknown key{suggest(str(key), TOP_LEVEL_KEYS)}; "
                                        f"allowed at the top level: {', '.join(TOP_LEVEL_KEYS)}")
    base = path.parent
    sources = data.get("sources")
    if not isinstance(sources, dict):
        raise ConfigError("sources", "expected a mapping with exactly two entries, ir: and vis:")
    for key in sources:
        if key not in ("ir", "vis"):
            raise ConfigError(f"sources.{key}", f"unknown key{suggest(str(key), ('ir', 'vis'))}; "
                                                f"sources has exactly two entries, ir: and vis:")
    for key in ("ir", "vis"):
        if key not in sources:
            raise ConfigError(f"sources.{key}", "missing; sources has exactly two entries, ir: and vis:")
    ir = _resolve(base, _source(sources["ir"], "sources.ir"), "sources.ir")
    vis = _resolve(base, _source(sources["vis"], "sources.vis"), "sources.vis")
    _check_pair(ir, vis)
    _check_clocks(ir, vis, build(LiveConfig, _section(data, "live", {}), "live"))
    if "calibration" not in data:
        raise ConfigError("calibration", "missing; name the calibration file, or write `calibration: null` "
                                         "if the two cameras already see the same pixels")
    cal_path, cal = None, None
    if data["calibration"] is not None:
        if not isinstance(data["calibration"], str):
            raise ConfigError("calibration", "expected a file path or null")
        cal_path = base / file_path(data["calibration"], "calibration")
        try:
            cal = load_calibration(cal_path)
        except RigError as exc:
            raise ConfigError("calibration", str(exc)) from None
        _check_sizes(ir, vis, cal, cal_path)
    thermal = build(ThermalConfig, _section(data, "thermal", {}), "thermal")
    if thermal.radiometry == "tlinear" and ir.pixel_format == "gray8":
        raise ConfigError("thermal.radiometry", "tlinear reads raw 16-bit counts, but sources.ir delivers gray8 "
                                                "(an AGC picture); set its pixel_format to gray16 (or auto)")
    sinks = _section(data, "sinks", [])
    if not isinstance(sinks, list):
        raise ConfigError("sinks", "expected a list of sinks, e.g. [{type: mp4, path: out.mp4}]")
    fusion = build(FusionConfig, _section(data, "fusion", {}), "fusion").resolved(base)
    if thermal.isotherm_c is not None:  # an isotherm in degrees replaces the scene-relative tint
        fusion = dataclasses.replace(fusion, hot_tint=False)
    priors = _priors(data, fusion.mode, base)
    return RigConfig(
        path=path, name=str(data.get("name") or path.stem), ir=ir, vis=vis,
        calibration_path=cal_path, calibration=cal,
        scene=build(SceneConfig, _section(data, "scene", {}), "scene"),
        sync=build(SyncConfig, _section(data, "sync", {}), "sync"),
        fusion=fusion,
        sinks=tuple(_resolve(base, _typed(SINK_TYPES, s, f"sinks[{i}]"), f"sinks[{i}]") for i, s in enumerate(sinks)),
        priors=priors, dino_named=priors is not None and _dino_named(data),
        registration=_registration(data, cal),
        live=build(LiveConfig, _section(data, "live", {}), "live"),
        thermal=thermal,
    )


def _priors(data: dict, mode: str, base: Path) -> PriorConfig | None:
    if "priors" not in data:
        return None
    cfg = build(PriorConfig, _section(data, "priors", {}), "priors")
    return resolve_paths(_mode_dino(cfg, mode, _dino_named(data)), base)


def _dino_named(data: dict) -> bool:
    """Whether the rig names priors.dino.model (once the section has built: both are mappings)."""
    return "model" in _section(_section(data, "priors", {}), "dino", {})


def _mode_dino(cfg: PriorConfig | None, mode: str, named: bool) -> PriorConfig | None:
    """`cfg` with the DINO of fusion mode `mode`, unless the rig named one."""
    if cfg is None or named:
        return cfg
    return dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, model=dino_for_mode(mode)))


def _registration(data: dict, cal: Calibration | None) -> RegistrationConfig:
    cfg = build(RegistrationConfig, _section(data, "registration", {}), "registration")
    if cfg.distance is not None and (cal is None or cal.parallax is None):
        raise ConfigError("registration.distance", "the calibration has no parallax model (intrinsics and "
                                                   "extrinsics); add `parallax:` to it or remove the distance")
    return cfg


def _section(data: dict, key: str, default):
    """A top-level section; absent or empty (`key:` alone) means the defaults."""
    value = data.get(key)
    return default if value is None else value


def _source(data: object, where: str) -> SourceConfig:
    return _typed(SOURCE_TYPES, data, where)


def _typed(types: dict[str, type], data: object, where: str):
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(where, f"expected a mapping with a `type:` ({' | '.join(types)})")
    kind = data["type"]
    if not isinstance(kind, str) or kind not in types:
        raise ConfigError(f"{where}.type", f"unknown type {kind!r}; expected one of {', '.join(types)}")
    return build(types[kind], data, where)


def _resolve(base: Path, cfg, where: str):
    """Make the config's `path` relative to the rig file, checking that inputs exist."""
    if not hasattr(cfg, "path"):
        return cfg
    path = cfg.path if cfg.path.is_absolute() else base / cfg.path
    if isinstance(cfg, ReplayConfig) and not path.exists():
        raise ConfigError(f"{where}.path", f"{path} does not exist; fix the path (relative to the rig file)")
    if isinstance(cfg, ReplayConfig) and not path.is_dir() and not_regular(path):
        raise ConfigError(f"{where}.path", f"{path} is {not_regular(path)}; give a video file or a folder of images")
    if isinstance(cfg, Mp4SinkConfig) and path.exists() and not_regular(path) not in ("", "not found"):
        raise ConfigError(f"{where}.path", f"{path} is {not_regular(path)}; give the path of a new or ordinary file")
    if isinstance(cfg, Mp4SinkConfig) and not path.parent.is_dir():
        raise ConfigError(f"{where}.path", f"folder {path.parent} does not exist; create it or change the path")
    return dataclasses.replace(cfg, path=path)


def _check_pair(ir: SourceConfig, vis: SourceConfig) -> None:
    if isinstance(ir, SyntheticConfig) != isinstance(vis, SyntheticConfig):
        raise ConfigError("sources", "a synthetic camera must be paired with another synthetic camera")
    if getattr(ir, "pixel_format", "auto") == "bgr24":
        raise ConfigError("sources.ir.pixel_format", "an IR source delivers gray8 or gray16, not bgr24")
    if getattr(vis, "pixel_format", "auto") in ("gray8", "gray16"):
        raise ConfigError("sources.vis.pixel_format", "a visible source delivers bgr24 (use auto)")
    if _paced(ir) != _paced(vis):
        raise ConfigError("sources", "both sources must use the same pace (both live/recorded, or both fast)")


def _check_clocks(ir: SourceConfig, vis: SourceConfig, live: LiveConfig) -> None:
    """Refuse stated clock offsets and latencies that keep the two cameras' stamps so far apart
    that a rig would run and fuse nothing: paced, one camera's frames would all be stale (older
    than live.max_age_ms); fast, the merge would work through MAX_FAST_SKEW_MS of one camera
    before the other's first frame."""
    def shift_ms(cfg) -> float:  # how far the source's stamps sit after the true capture time
        return getattr(cfg, "clock_offset_ms", 0.0) - getattr(cfg, "latency_ms", 0.0)

    skew = shift_ms(ir) - shift_ms(vis)
    limit, why = (live.max_age_ms, "live.max_age_ms") if _paced(ir) else (MAX_FAST_SKEW_MS, "a fast replay's limit")
    if abs(skew) > limit:
        raise ConfigError("sources", f"the IR frames are stamped {skew:+.0f} ms from the visible ones "
                                     f"(clock_offset_ms - latency_ms), beyond {why} ({limit:g} ms): no pair "
                                     f"would form; fix the offsets or latencies")


def _check_sizes(ir: SourceConfig, vis: SourceConfig, cal: Calibration, cal_path: Path) -> None:
    """Sources that state their size (cameras, synthetic) must match the calibration's."""
    for role, cfg, expected in (("ir", ir, cal.ir_size), ("vis", vis, cal.vis_size)):
        size = getattr(cfg, "size", None)
        if size is not None and tuple(size) != tuple(expected):
            raise ConfigError(f"sources.{role}.size", f"{list(size)} does not match {cal_path}, which is for "
                                                      f"{list(expected)}; fix the size or calibrate for it")


def _paced(cfg: SourceConfig) -> bool:
    return cfg.pace in ("realtime", "recorded")


def recording_metadata(rig: RigConfig, ir, vis) -> dict:
    """What a raw archive keeps about `rig` and its opened sources `ir`, `vis`, as plain data
    (JSON): the calibration file's text, each camera's size, rate, format and settings, and
    the sync, fusion, thermal, registration and priors sections, so that the archive alone is
    enough to fuse it again (`streamfuse refuse` builds a rig from it)."""
    calibration = None
    if rig.calibration_path is not None:
        calibration = rig.calibration_path.read_text()
    cameras = {src.name: {"size": list(src.size), "fps": str(src.fps), "pixel_format": src.pixel_format,
                          "source": plain(cfg)} for src, cfg in ((ir, rig.ir), (vis, rig.vis))}
    return {"name": rig.name, "calibration": calibration, "cameras": cameras,
            "sync": plain(rig.sync), "fusion": plain(rig.fusion), "thermal": plain(rig.thermal),
            "registration": plain(rig.registration),
            "priors": plain(rig.priors) if rig.priors is not None else None}


def plain(cfg) -> dict:
    """A config dataclass as the plain mapping a rig file would hold (paths as text)."""
    def value(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v):
            return plain(v)
        return v

    return {f.name: value(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
