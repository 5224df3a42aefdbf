"""The rig's `priors:` section: which CLIP and DINO models, which prompts, how often to refresh.

Plain dataclasses, no torch: a rig with priors loads (and is checked) on a machine without
the `learn` extra; the models are only built when the rig runs. Paths (a local checkpoint, an
open_clip model config, the cache folder) are relative to the rig file, like every rig path.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streamfuse.config import ConfigError, check_range

#: `weights:` value that builds the model with random weights: tests and cost benchmarks only.
RANDOM = "random"
#: `size:` value that shows the models the frame at its own size (see PriorConfig.size).
NATIVE = "native"
#: Suffixes that make a `weights:` value a checkpoint file rather than a pretrained tag.
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def is_file_ref(value: str) -> bool:
    """True when a `weights:` or `model:` value names a file rather than a tag or a name."""
    return "/" in value or value.endswith(CHECKPOINT_SUFFIXES + (".json",))


@dataclass(frozen=True)
class ClipConfig:
    """The CLIP image/text model (rig `priors.clip`), built by open_clip.

    Attributes:
        model: an open_clip architecture name (`ViT-B-16`, `ViT-B-32`, `ViT-S-16`, ...) or an
            open_clip model config file (`.json`). Plain ViTs only: the prior reads their blocks.
        weights: an open_clip pretrained tag of that model (`laion2b_s34b_b88k`, read from the
            Hugging Face cache), a checkpoint file, or `random` (tests and benchmarks only).
        layer: the block whose patch tokens form the semantic map (negative counts from the
            last; -3 is SPGFusion's choice for ViT-B/16). The tokens are taken where SPGFusion
            hooks them, at the output of that block's `ln_2`: after its attention residual,
            layer-normalised, before its MLP.
    """

    model: str = "ViT-B-16"
    weights: str = "laion2b_s34b_b88k"
    layer: int = -3

    def __post_init__(self):
        _check_name("model", self.model)
        _check_name("weights", self.weights)
        check_range("layer", self.layer, -48, 47)


@dataclass(frozen=True)
class DinoConfig:
    """The DINO model (rig `priors.dino`), built by timm.

    Attributes:
        model: a timm ViT architecture (`vit_small_patch16_224`, `vit_base_patch16_224`, ...).
            A rig that does not name one gets `dino_for_mode(fusion.mode)`: ViT-B/16 for spg,
            ViT-S/16 for the others.
        weights: its timm pretrained tag (`dino`: the timm model `vit_small_patch16_224.dino`,
            or `vit_base_patch16_224.dino`, read from the Hugging Face cache), a checkpoint
            file (for the model named, so name the model with it), or `random`.
    """

    model: str = "vit_small_patch16_224"
    weights: str = "dino"

    def __post_init__(self):
        _check_name("model", self.model)
        _check_name("weights", self.weights)


#: The DINO of a rig whose priors do not name one, per fusion mode. spg reads the prior's
#: features as SPGFusion does, with its DINO ViT-B/16; the other modes read only the emphasis
#: map, for which ViT-S/16 (the cheaper preset, docs/benchmarks.md) does.
DINO_BY_MODE = {"spg": "vit_base_patch16_224"}


def dino_for_mode(mode: str) -> str:
    """The timm model `priors.dino.model` defaults to under fusion mode `mode`."""
    return DINO_BY_MODE.get(mode, DinoConfig.model)


@dataclass(frozen=True)
class PromptConfig:
    """One text prompt (rig `priors.prompts[i]`): what to look for, and how much it matters."""

    text: str
    weight: float = 1.0

    def __post_init__(self):
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("text: expected a word or short phrase, e.g. person")
        check_range("weight", self.weight, 0.0, 1.0)


#: Up to this many cores the prior process yields to the frame loop by default (`yield_to_frames`).
YIELD_CORES = 2


@dataclass(frozen=True)
class PriorConfig:
    """Semantic priors (rig key `priors`): a section present turns them on.

    Attributes:
        clip, dino: the two models (see ClipConfig, DinoConfig).
        size: the shorter side, in pixels (32..1024), of the image the models see (the frame
            is resized, keeping its aspect, to a multiple of the patch size); 224 is what they
            were trained on. `native`: the frame at its own size, as SPGFusion reads it, each
            side rounded to the nearest multiple of the patch (a resize by at most half a
            patch, so the patch grid covers exactly the frame). SPGFusion pads to the multiple
            instead; we resize because the fusers stretch the prior's grid over the whole
            frame (`prior.upsample`), which a padded grid would overhang, and because black
            padding patches would join the dark regions of the frame in DINO's affinities.
            Native costs tokens: 640x512 is 1280 patches, against 252 at 224.
        prompts: text prompts ("person", or {text: car, weight: 0.5}); their regions get more
            thermal weight. Without prompts, the regions whose meaning stands out from the rest
            of the IR image (objects against the background) do.
        strength: 0..1, how far a fully relevant region moves towards IR only.
        every_frames: refresh after this many frames (0: never for this reason).
        max_age_s: refresh when the prior is older than this, in capture time (0: never).
        scene_change: refresh when a 32x24 thumbnail of either camera differs from the one the
            prior was computed from by more than this (mean absolute difference in standard
            deviations; 0: never).
        threads: torch threads of the refresh worker (null: the thread budget's share, 1 on up
            to 4 cores; `streamfuse.threads`).
        schedule: idle (the default): the worker runs in Linux's SCHED_IDLE class, only on
            cycles nothing else wants; nice: `nice` steps below the frame loop instead.
        nice: with schedule nice, how much lower the worker's OS priority is (0..19).
        isolation: process (the default): the models run in a child process (its own
            interpreter lock, the whole process in SCHED_IDLE; `priors.process`); thread: in
            the worker thread of the frame loop's process (the lock is shared; for debugging).
        yield_to_frames: with isolation process, true: the prior process is stopped while
            the frame loop works on a pair and runs only while it waits for the next, so a
            refresh never shares the machine with the fusion (refreshes take longer: they get
            only the time between frames); false: it runs whenever its schedule lets it; null
            (the default): true on up to YIELD_CORES cores, where the fusion and the prior
            would share the whole machine, false on more.
        device: `cpu`, or `cuda` for the worker's models.
        offline: true (the default): a run never downloads, and a weight that is not on disk
            is an error naming `streamfuse models fetch RIG`; false: a run first downloads
            what is missing into the hub cache. HF_HUB_OFFLINE=1 makes every run offline.
        cache_dir: the Hugging Face hub cache to read (and fetch into); default: the
            hub's own (HF_HUB_CACHE, ~/.cache/huggingface/hub).
    """

    clip: ClipConfig = field(default_factory=ClipConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    #: Pixels, or NATIVE; checked in __post_init__ (as registration.distance).
    size: int | str = 224
    #: Given as a list of texts or {text, weight} mappings; stored as a tuple of PromptConfig.
    prompts: list[PromptConfig | str] = ()
    strength: float = 0.8
    every_frames: int = 30
    max_age_s: float = 2.0
    scene_change: float = 0.5
    threads: int | None = None
    schedule: Literal["idle", "nice"] = "idle"
    nice: int = 10
    isolation: Literal["process", "thread"] = "process"
    yield_to_frames: bool | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    offline: bool = True
    cache_dir: Path | None = None

    def __post_init__(self):
        prompts = tuple(PromptConfig(p) if isinstance(p, str) else p for p in self.prompts)
        object.__setattr__(self, "prompts", prompts)
        if len({p.text for p in prompts}) != len(prompts):
            raise ValueError("prompts: each prompt may appear once")
        _check_size(self.size)
        check_range("strength", self.strength, 0.0, 1.0)
        check_range("every_frames", self.every_frames, 0, 100_000)
        check_range("max_age_s", self.max_age_s, 0.0, 3600.0)
        check_range("scene_change", self.scene_change, 0.0, 10.0)
        if self.threads is not None:
            check_range("threads", self.threads, 1, 64)
        check_range("nice", self.nice, 0, 19)
        if not (self.every_frames or self.max_age_s or self.scene_change):
            raise ValueError("every_frames: set every_frames, max_age_s or scene_change, "
                             "or the prior is computed only once")

    def yields(self, cores: int) -> bool:
        """Whether the prior process is stopped while the frame loop works, on `cores` cores."""
        return self.yield_to_frames if self.yield_to_frames is not None else cores <= YIELD_CORES

    def describe(self) -> str:
        """One line for `streamfuse check`: the models and the prompts."""
        prompts = ", ".join(p.text for p in self.prompts) or "none (what stands out in the IR image)"
        return (f"CLIP {self.clip.model} '{self.clip.weights}', DINO {self.dino.model} '{self.dino.weights}', "
                f"prompts: {prompts}")

    @property
    def key(self) -> str:
        """What a prior depends on besides the frames: models, weights, input size, prompts.

        Two priors with the same key are comparable; a cached prior with another key is not.
        `ln_2` names the CLIP tap (SPGFusion's): priors cached before it (the block's output)
        have keys without it, so they are not taken for these.
        """
        prompts = ",".join(f"{p.text}:{p.weight:g}" for p in self.prompts)
        return (f"clip={self.clip.model}/{self.clip.weights}@{self.clip.layer}.ln_2 "
                f"dino={self.dino.model}/{self.dino.weights} size={self.size} "
                f"strength={self.strength:g} prompts=[{prompts}]")


def _check_size(size: int | str) -> None:
    pixels = isinstance(size, int) and not isinstance(size, bool)
    if size != NATIVE and not (pixels and 32 <= size <= 1024):
        raise ValueError(f"size: expected a shorter side of 32 to 1024 pixels, or {NATIVE} "
                         f"(the frame's own size), got {size!r}")


def _check_name(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: expected a name, a tag or a file path")


def resolve_paths(cfg: PriorConfig, base: Path, where: str = "priors") -> PriorConfig:
    """`cfg` with its file references made relative to `base` (the rig's folder) and checked."""
    clip, dino = cfg.clip, cfg.dino
    clip = dataclasses.replace(clip, model=_resolve(base, clip.model, f"{where}.clip.model"),
                               weights=_resolve(base, clip.weights, f"{where}.clip.weights"))
    dino = dataclasses.replace(dino, weights=_resolve(base, dino.weights, f"{where}.dino.weights"))
    cache = cfg.cache_dir
    if cache is not None and not cache.is_absolute():
        cache = base / cache
    return dataclasses.replace(cfg, clip=clip, dino=dino, cache_dir=cache)


def _resolve(base: Path, value: str, where: str) -> str:
    if not is_file_ref(value):
        return value
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(where, f"{path} does not exist; fix the path (relative to the rig file), "
                                 f"or name a pretrained tag")
    return str(path)
