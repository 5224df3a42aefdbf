"""Sources: where frames come from. `SOURCE_TYPES` maps a rig's `type:` to its config class.

Adding a source type: write `capture/<type>.py` with a config dataclass and a `Source`
subclass, add both here, and run the contract tests in tests/test_capture.py over it.
"""
from __future__ import annotations

from streamfuse.capture.base import CaptureThread, Source
from streamfuse.capture.replay import ReplayConfig, open_replay
from streamfuse.capture.synthetic import SceneConfig, SyntheticConfig, SyntheticSource, make_scene

SOURCE_TYPES = {"synthetic": SyntheticConfig, "replay": ReplayConfig}
SourceConfig = SyntheticConfig | ReplayConfig

__all__ = ["CaptureThread", "Source", "SOURCE_TYPES", "SourceConfig", "open_sources"]


def open_sources(ir: SourceConfig, vis: SourceConfig, scene: SceneConfig) -> tuple[Source, Source]:
    """Build (not open) the IR and visible sources of a rig."""
    if isinstance(ir, SyntheticConfig):
        shared = make_scene(scene, ir, vis)
        return SyntheticSource("ir", ir, shared), SyntheticSource("vis", vis, shared)
    return open_replay("ir", ir), open_replay("vis", vis)
