"""Where the CLIP and DINO weights come from: pretrained tags in the Hugging Face hub cache,
local checkpoint files, or (only when the rig says `weights: random`) nowhere.

A pretrained tag is looked up the way its library does: open_clip's tag table for CLIP
(`ViT-B-16` + `laion2b_s34b_b88k` -> hub repo `laion/CLIP-ViT-B-16-laion2B-s34B-b88K`),
timm's pretrained configs for DINO (`vit_small_patch16_224` + `dino` -> `timm/vit_small_patch16_224.dino`).
The file is read from the hub cache (HF_HUB_CACHE, or the rig's `priors.cache_dir`), so a
machine that already has the weights for open_clip or timm has them for streamfuse too.

`streamfuse run` is offline by default: a rig is prepared beforehand with `streamfuse
models fetch RIG`, and a run whose weights are not on disk stops at start-up with one line
naming the file and that command (a live rig should not start with a 600 MB download). With
`priors.offline: false` a run downloads what is missing first, as open_clip and timm do;
HF_HUB_OFFLINE=1 forbids every download. Nothing ever falls back to random weights.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from streamfuse.errors import UsageError
from streamfuse.priors.config import (
    RANDOM,
    ClipConfig,
    DinoConfig,
    PriorConfig,
    is_file_ref,
)

#: Files a hub repo may keep the weights in, preferred first (safetensors loads without pickle).
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")

#: The configurations `streamfuse models list` shows: (role, model, tag, what it is).
KNOWN = (
    ("clip", "ViT-B-16", "laion2b_s34b_b88k", "default: SPGFusion's CLIP, 150 M parameters"),
    ("clip", "ViT-B-32", "laion2b_s34b_b79k", "small: 4x fewer tokens than ViT-B-16"),
    ("dino", "vit_small_patch16_224", "dino", "default (not spg): DINO ViT-S/16, 22 M parameters"),
    ("dino", "vit_base_patch16_224", "dino", "default for spg: DINO ViT-B/16 (SPGFusion's), 86 M parameters"),
)


@dataclass(frozen=True)
class WeightRef:
    """One model's weights: a hub file (repo_id + candidate files), a local file, or random."""

    role: str                       # "clip" or "dino"
    model: str                      # architecture name (or open_clip config file)
    weights: str                    # the rig's value: tag, file path or "random"
    repo_id: str = ""               # hub repository, for a pretrained tag
    filenames: tuple[str, ...] = ()  # candidate files in the repository, preferred first

    @property
    def random(self) -> bool:
        return self.weights == RANDOM

    @property
    def local_file(self) -> Path | None:
        return Path(self.weights) if is_file_ref(self.weights) else None

    def describe(self) -> str:
        if self.repo_id:
            return f"{self.role} {self.model} '{self.weights}' (hub {self.repo_id})"
        return f"{self.role} {self.model} weights {self.weights}"


def weight_refs(cfg: PriorConfig) -> list[WeightRef]:
    """The CLIP and DINO weights a priors section needs."""
    return [clip_ref(cfg.clip), dino_ref(cfg.dino)]


def clip_ref(cfg: ClipConfig) -> WeightRef:
    """Resolve `priors.clip` through open_clip's table of pretrained tags."""
    import open_clip

    if cfg.weights == RANDOM or is_file_ref(cfg.weights):
        return WeightRef("clip", cfg.model, cfg.weights)
    if is_file_ref(cfg.model):
        raise UsageError(f"priors.clip.weights: a model given as a config file ({cfg.model}) has no pretrained "
                         f"tags; give a checkpoint file or `random`")
    pcfg = open_clip.get_pretrained_cfg(cfg.model, cfg.weights)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(cfg.model)
        known = ", ".join(tags) if tags else "none (use a checkpoint file)"
        raise UsageError(f"priors.clip.weights: '{cfg.weights}' is not an open_clip pretrained tag of "
                         f"{cfg.model}; its tags: {known}")
    hub = pcfg.get("hf_hub", "")
    if not hub:
        raise UsageError(f"priors.clip.weights: {cfg.model} '{cfg.weights}' is only published at {pcfg.get('url')}; "
                         f"download it and set priors.clip.weights to the file")
    repo_id, filename = os.path.split(hub)  # "org/repo/" (default file names) or "org/repo/file"
    return WeightRef("clip", cfg.model, cfg.weights, repo_id, (filename,) if filename else CLIP_FILES)


def dino_ref(cfg: DinoConfig) -> WeightRef:
    """Resolve `priors.dino` through timm's pretrained configs (`model.tag`)."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(cfg.model):
        raise UsageError(f"priors.dino.model: timm has no model {cfg.model!r}; e.g. vit_small_patch16_224, "
                         f"vit_base_patch16_224")
    if cfg.weights == RANDOM or is_file_ref(cfg.weights):
        return WeightRef("dino", cfg.model, cfg.weights)
    try:
        pcfg = get_pretrained_cfg(f"{cfg.model}.{cfg.weights}")
    except RuntimeError:
        pcfg = None
    if pcfg is None or not pcfg.hf_hub_id:
        tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{cfg.model}.*")]
        raise UsageError(f"priors.dino.weights: '{cfg.weights}' is not a timm pretrained tag of {cfg.model}; "
                         f"its tags: {', '.join(tags) or 'none'}")
    files = (pcfg.hf_hub_filename,) if pcfg.hf_hub_filename else TIMM_FILES
    return WeightRef("dino", cfg.model, cfg.weights, pcfg.hf_hub_id, files)


def locate(ref: WeightRef, cache_dir: Path | None) -> Path | None:
    """The weights file on this machine, or None if it is not there (never downloads)."""
    if ref.random:
        return None
    if ref.local_file is not None:
        return ref.local_file if ref.local_file.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    for filename in ref.filenames:
        found = try_to_load_from_cache(ref.repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


def fetch(ref: WeightRef, cache_dir: Path | None) -> Path:
    """Download a hub file into the cache (or find it there, intact); UsageError in one line
    if it cannot. A cached file whose hash does not match is downloaded again."""
    found = locate(ref, cache_dir)
    if ref.random or ref.local_file is not None or (found is not None and check_hash(found) is not False):
        return found
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    last = ""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would break the one-line error
    try:
        for filename in ref.filenames:
            try:
                return Path(hf_hub_download(ref.repo_id, filename, cache_dir=cache_dir,
                                            force_download=found is not None))
            except LocalEntryNotFoundError:
                last = "the hub cannot be reached (no connection, or HF_HUB_OFFLINE is set)"
                break
            except EntryNotFoundError:
                last = f"{ref.repo_id} has no {filename}"
            except Exception as exc:  # auth, disk, HTTP: all end the same way, in one line
                last = one_line(exc)
                break
    finally:
        hub_log.setLevel(level)
    raise UsageError(f"could not download {ref.describe()}: {last}")


def offline(cfg: PriorConfig) -> bool:
    """True when a run may not download: the rig says so (the default), or HF_HUB_OFFLINE is set."""
    return cfg.offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def weights_paths(cfg: PriorConfig, rig_path: Path | str) -> tuple[Path | None, Path | None]:
    """The (CLIP, DINO) files to load at start-up (None: random weights), downloading
    missing ones unless offline; one UsageError naming everything that is missing."""
    refs = weight_refs(cfg)
    found = [locate(ref, cfg.cache_dir) for ref in refs]
    missing = [ref for ref, path in zip(refs, found) if path is None and not ref.random]
    for ref in missing:
        if ref.local_file is not None:
            raise UsageError(f"priors.{ref.role}.weights: {ref.local_file} does not exist; fix the path")
    if not missing:
        return found[0], found[1]
    fix = (f"run `streamfuse models fetch {rig_path}` on a machine with internet (it fills the hub cache "
           f"{cache_location(cfg)}), or set priors.{missing[0].role}.weights to a checkpoint file")
    if offline(cfg):
        what = " and ".join(ref.describe() for ref in missing)
        raise UsageError(f"priors: {what} {'is' if len(missing) == 1 else 'are'} not on this machine; {fix}")
    try:
        for ref in missing:
            found[refs.index(ref)] = fetch(ref, cfg.cache_dir)
    except UsageError as exc:
        raise UsageError(f"priors: {exc}; {fix}") from None
    return found[0], found[1]


def cache_location(cfg: PriorConfig) -> str:
    if cfg.cache_dir is not None:
        return str(cfg.cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def check_hash(path: Path) -> bool | None:
    """Compare a hub-cached file with the SHA-256 its blob is named after (the hub's LFS hash).

    True: intact; False: corrupted or truncated; None: nothing to compare with (a local file,
    or a small file the hub does not hash).
    """
    target = path.resolve()
    name = target.name
    if not path.is_symlink() or len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
        return None
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest() == name


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 200 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
