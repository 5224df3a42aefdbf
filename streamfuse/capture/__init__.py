"""Sources: where frames come from. `SOURCE_TYPES` maps a rig's `type:` to its config class.

Adding a source type: write `capture/<type>.py` with a config dataclass and a `Source`
subclass, add both here, and run the contract tests in tests/test_capture.py over it.
"""
from __future__ import annotations

from streamfuse.capture.archive import ArchiveConfig, ArchiveSource
from streamfuse.capture.base import CaptureThread, Source
from streamfuse.capture.network import NetworkConfig, NetworkSource
from streamfuse.capture.replay import ReplayConfig, open_replay
from streamfuse.capture.synthetic import (
    SceneConfig,
    SyntheticConfig,
    SyntheticSource,
    make_scene,
)
from streamfuse.capture.uvc import UvcConfig, UvcSource

SOURCE_TYPES = {"synthetic": SyntheticConfig, "replay": ReplayConfig, "uvc": UvcConfig, "network": NetworkConfig,
                "archive": ArchiveConfig}
SourceConfig = SyntheticConfig | ReplayConfig | UvcConfig | NetworkConfig | ArchiveConfig
#: Source types that are hardware: `streamfuse check` validates their settings without opening them.
DEVICE_TYPES = (UvcConfig, NetworkConfig)

__all__ = ["CaptureThread", "DEVICE_TYPES", "Source", "SOURCE_TYPES", "SourceConfig", "open_sources"]


def open_sources(ir: SourceConfig, vis: SourceConfig, scene: SceneConfig) -> tuple[Source, Source]:
    """Build (not open) the IR and visible sources of a rig."""
    if isinstance(ir, SyntheticConfig):
        shared = make_scene(scene, ir, vis)
        return SyntheticSource("ir", ir, shared), SyntheticSource("vis", vis, shared)
    return _open_one("ir", ir), _open_one("vis", vis)


def _open_one(name: str, cfg: SourceConfig) -> Source:
    if isinstance(cfg, UvcConfig):
        return UvcSource(name, cfg)
    if isinstance(cfg, NetworkConfig):
        return NetworkSource(name, cfg)
    if isinstance(cfg, ArchiveConfig):
        return ArchiveSource(name, cfg)
    return open_replay(name, cfg)
