"""Semantic priors, piece by piece: config, fusion with a prior, the extractor on fake towers with
known features and on small random models built by the real code paths, weights and the cache,
the refresh policy and the worker thread. The pipeline and the command line: test_priors_run.py.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamfuse.config import ConfigError, build
from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.fuse import MODES, NEEDS_WEIGHTS, FusionConfig, make_fuser
from streamfuse.fuse.palettes import apply_palette
from streamfuse.priors import ClipConfig, DinoConfig, Prior, PriorConfig
from streamfuse.priors.config import resolve_paths
from streamfuse.priors.extractor import (
    BACKGROUND_WORDS,
    PriorExtractor,
    build_extractor,
)
from streamfuse.priors.prior import BLEND_FRAMES, EmphasisTrack, upsample
from streamfuse.priors.weights import (
    check_hash,
    clip_ref,
    dino_ref,
    locate,
    weights_paths,
)
from streamfuse.priors.worker import Offer, PriorWorker, RefreshPolicy, thumbnail
from streamfuse.thermal import ir_to_u8

READY = sorted(set(MODES) - NEEDS_WEIGHTS)  # the modes built from default settings
#: The modes that fuse the grey IR into the visible luma (the others colour the IR).
LUMA_MODES = ("pyramid", "lite")
#: An open_clip ViT small enough to build and run in milliseconds: same factory, same blocks.
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def tiny_clip_file(folder: Path) -> Path:
    path = folder / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


def tiny_config(folder: Path, **overrides) -> PriorConfig:
    """Random tiny CLIP (open_clip config file) + timm's test_vit: the real loading code paths.
    Scheduled at normal priority: tests of the refresh cadence must not depend on a shared
    machine having idle cycles (SCHED_IDLE, the default, is tested on its own), nor on the time
    between frames (`yield_to_frames`, the default on 2 cores, also tested on its own)."""
    fields = dict(clip=ClipConfig(model=str(tiny_clip_file(folder)), weights="random", layer=-2),
                  dino=DinoConfig(model="test_vit", weights="random"), size=64, schedule="nice", nice=0,
                  yield_to_frames=False)
    return PriorConfig(**{**fields, **overrides})


def prior_of(emphasis: np.ndarray) -> Prior:
    e = np.zeros((1,), np.float32)
    return Prior(emphasis=emphasis.astype(np.float32), semantic_ir=e, semantic_vis=e, global_ir=e, global_vis=e)


# --- config --------------------------------------------------------------------------------


def test_the_prior_process_yields_to_frames_by_default_on_two_cores_only():
    cfg = build(PriorConfig, {}, "priors")
    assert cfg.yields(1) and cfg.yields(2) and not cfg.yields(4)
    assert not build(PriorConfig, {"yield_to_frames": False}, "priors").yields(2)
    assert build(PriorConfig, {"yield_to_frames": True}, "priors").yields(16)
    with pytest.raises(ConfigError, match="yield_to_frames: expected true or false"):
        build(PriorConfig, {"yield_to_frames": "often"}, "priors")


def test_config_builds_from_yaml_shapes_and_rejects_mistakes():
    cfg = build(PriorConfig, {"prompts": ["person", {"text": "car", "weight": 0.5}], "every_frames": 10}, "priors")
    assert [(p.text, p.weight) for p in cfg.prompts] == [("person", 1.0), ("car", 0.5)]
    assert cfg.clip.model == "ViT-B-16" and cfg.clip.weights == "laion2b_s34b_b88k"
    assert cfg.dino.model == "vit_small_patch16_224" and cfg.dino.weights == "dino"
    assert cfg.offline
    for bad, key in [({"evry_frames": 3}, "priors.evry_frames"), ({"strength": 2}, "priors.strength"),
                     ({"prompts": ["dog", "dog"]}, "priors.prompts"),
                     ({"prompts": [{"text": "dog", "weight": 3}]}, "priors.prompts[0]"),
                     ({"every_frames": 0, "max_age_s": 0, "scene_change": 0}, "priors.every_frames"),
                     ({"clip": {"model": ""}}, "priors.clip.model")]:
        with pytest.raises(ConfigError) as err:
            build(PriorConfig, bad, "priors")
        assert err.value.key.startswith(key), (bad, err.value.key)


def test_size_is_pixels_or_native_and_anything_else_is_refused_in_one_line():
    assert build(PriorConfig, {"size": "native"}, "priors").size == "native"
    assert build(PriorConfig, {"size": 160}, "priors").size == 160
    assert "size=native" in PriorConfig(size="native").key and "size=224" in PriorConfig().key
    assert "@-3.ln_2 " in PriorConfig().key  # the CLIP tap: priors cached from the block output differ
    for bad in ("nativ", 0, -1, 2000, True, 224.0, "224"):
        with pytest.raises(ConfigError) as err:
            build(PriorConfig, {"size": bad}, "priors")
        message = str(err.value)
        assert err.value.key == "priors.size" and "\n" not in message, (bad, message)
        if not isinstance(bad, (bool, float)):  # those two stop at the type check, one line too
            assert "32 to 1024 pixels, or native" in message and repr(bad) in message, message
    with pytest.raises(ValueError, match="size: expected .* or native"):
        PriorConfig(size="nativ")


def test_file_references_are_relative_to_the_rig_and_must_exist(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "dino.safetensors").write_bytes(b"x")
    cfg = resolve_paths(PriorConfig(dino=DinoConfig(weights="w/dino.safetensors"), cache_dir=Path("cache")), tmp_path)
    assert cfg.dino.weights == str(tmp_path / "w" / "dino.safetensors")
    assert cfg.cache_dir == tmp_path / "cache"
    assert cfg.clip.weights == "laion2b_s34b_b88k"  # a tag stays a tag
    with pytest.raises(ConfigError, match="clip.weights: .*nope.pt does not exist"):
        resolve_paths(PriorConfig(clip=ClipConfig(weights="nope.pt")), tmp_path)


# --- fusion with a prior -------------------------------------------------------------------


def _two_targets(textured: bool = False):
    """A 96x128 night scene with two equally hot squares; the prior marks only the first.
    The visible image is grain, or (`textured`) a fine checkerboard under light grain."""
    rng = np.random.default_rng(3)
    ir = rng.integers(24000, 26000, (96, 128), dtype=np.uint16)
    ir[32:64, 16:48] += 6000   # target: marked
    ir[32:64, 80:112] += 6000  # the same heat, not marked
    if textured:
        yy, xx = np.mgrid[:96, :128]
        checks = 60.0 + 60.0 * ((yy // 4 + xx // 4) % 2)
        vis = np.clip(checks[..., None] + rng.normal(0, 4, (96, 128, 3)), 0, 255).astype(np.uint8)
    else:
        vis = np.clip(rng.normal(90, 35, (96, 128, 3)), 0, 255).astype(np.uint8)
    emphasis = np.zeros((6, 8), np.float32)  # 16-pixel cells
    emphasis[2:4, 1:3] = 1.0
    inner = (slice(40, 56), slice(24, 40)), (slice(40, 56), slice(88, 104))
    return ir, vis, emphasis, inner


def _ir_only(mode: str, ir: np.ndarray, palette: str) -> np.ndarray:
    """What the frame would look like with all weight on the IR (the thermal signature)."""
    ir8 = ir_to_u8(ir)
    return cv2.cvtColor(ir8, cv2.COLOR_GRAY2BGR) if mode in LUMA_MODES else apply_palette(ir8, palette)


@pytest.mark.parametrize("mode", READY)
def test_region_the_prior_marks_gets_more_thermal_weight(mode):
    # lite reads pure grain in the visible image as no detail and already gives such a region
    # to the IR, so for it the visible image has texture the prior must give up.
    ir, vis, emphasis, (marked, unmarked) = _two_targets(textured=mode == "lite")
    cfg = FusionConfig(mode=mode, palette="white-hot", strength=0.4)
    plain = make_fuser(cfg).fuse(ir, vis)
    fuser = make_fuser(cfg)
    prior = prior_of(emphasis)
    for _ in range(BLEND_FRAMES):
        steered = fuser.fuse(ir, vis, prior=prior)
    thermal = _ir_only(mode, ir, "white-hot").astype(float)

    def distance(out, where):  # how far from the thermal signature (grey levels)
        y = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(float) if mode in LUMA_MODES else out.astype(float)
        t = thermal[..., 0] if mode in LUMA_MODES else thermal
        return np.abs(y[where] - t[where]).mean()

    assert distance(steered, marked) < 0.5 * distance(plain, marked), mode
    # The unmarked target (and everything else far from the mark) is fused as before.
    assert np.abs(steered[unmarked].astype(int) - plain[unmarked].astype(int)).mean() < 1.5


@pytest.mark.parametrize("mode", READY)
def test_without_a_prior_the_output_is_the_classical_one_and_zero_emphasis_changes_little(mode):
    ir, vis, emphasis, _ = _two_targets()
    cfg = FusionConfig(mode=mode)
    plain = make_fuser(cfg).fuse(ir, vis)
    fuser = make_fuser(cfg)
    assert np.array_equal(fuser.fuse(ir, vis, prior=None), plain)
    for _ in range(BLEND_FRAMES):
        neutral = fuser.fuse(ir, vis, prior=prior_of(np.zeros_like(emphasis)))
    assert np.abs(neutral.astype(int) - plain.astype(int)).max() <= 2


def test_new_prior_blends_in_over_a_few_frames_and_maps_are_derived_once_per_prior():
    calls = []

    def derive(emphasis, shape):
        calls.append(float(emphasis.max()))
        return (upsample(emphasis, (shape[1], shape[0])),)

    track = EmphasisTrack(derive)
    assert track.maps(None, (32, 48)) is None  # no prior yet: the fuser works classically
    first = prior_of(np.ones((2, 3), np.float32))
    levels = [float(track.maps(first, (32, 48))[0].mean()) for _ in range(BLEND_FRAMES + 5)]
    assert calls == [0.0, 1.0]  # the neutral start and the prior: once each, not per frame
    assert np.allclose(levels[:BLEND_FRAMES], np.arange(1, BLEND_FRAMES + 1) / BLEND_FRAMES, atol=1e-3)
    assert levels[BLEND_FRAMES:] == [1.0] * 5
    steady = track.maps(first, (32, 48))
    assert track.maps(None, (32, 48)) is steady  # between refreshes: the same arrays, no work
    second = prior_of(np.zeros((2, 3), np.float32))
    steps = [float(track.maps(second, (32, 48))[0].mean()) for _ in range(BLEND_FRAMES)]
    assert calls == [0.0, 1.0, 0.0]
    assert np.all(np.diff([1.0] + steps) < 0) and steps[-1] == 0.0  # down in even steps, no jump
    assert max(abs(d) for d in np.diff([1.0] + steps)) <= 1.0 / BLEND_FRAMES + 1e-3


# --- the extractor on fake towers with known features --------------------------------------

PROMPTS = ["person", "car"]
WORDS = PROMPTS + [w for w in BACKGROUND_WORDS if w not in PROMPTS]
E = len(WORDS) + 2  # text embedding size; each word is a unit axis


class FakeClip:
    """A CLIP whose dense feature is the 'person' axis on hot patches, 'background' elsewhere;
    `flip` patches (a list of (row, col)) get the background axis although they are hot."""

    patch, mean, std, logit_scale = 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 100.0

    def __init__(self, flip=()):
        self.flip = flip

    def __call__(self, x):
        hot = _hot_patches(x, self.patch)  # (B, gh, gw) bool
        axes = torch.where(hot, WORDS.index("person"), WORDS.index("background"))
        for r, c in self.flip:
            axes[:, r, c] = WORDS.index("background")
        dense = torch.nn.functional.one_hot(axes, E).float()
        return dense.mean(dim=(1, 2)), dense * 3.0, dense


class FakeDino:
    """DINO features that say 'hot' or 'not hot' per patch: affinity groups the hot object."""

    patch, mean, std = 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def __call__(self, x):
        hot = _hot_patches(x, self.patch).float()
        return torch.stack([hot, 1.0 - hot, 0.05 * torch.ones_like(hot)], dim=-1)


def _hot_patches(x, patch):
    """(B, 3, H, W) in [0, 1] -> (B, gh, gw) True where the IR image (batch 0) is bright."""
    ir = x[0:1, 0:1]
    means = torch.nn.functional.avg_pool2d(ir, patch)[:, 0] > 0.5
    return means.expand(x.shape[0], -1, -1)


def _hot_scene(size=(480, 640), box=(slice(160, 320), slice(256, 384))):
    ir = np.full(size, 24000, np.uint16)
    ir[box] = 30000
    vis = np.full(size + (3,), 40, np.uint8)
    return ir, vis


def _fake_extractor(prompts=PROMPTS, flip=(), strength=0.8):
    cfg = PriorConfig(prompts=prompts, strength=strength, clip=ClipConfig(weights="random"),
                      dino=DinoConfig(weights="random"))
    text = np.eye(E, dtype=np.float32)[:len(WORDS)] if prompts else None
    return PriorExtractor(cfg, FakeClip(flip), FakeDino(), text, len(WORDS) - len(PROMPTS) if prompts else 0)


def test_prompt_relevance_marks_the_target_and_strength_scales_the_emphasis():
    ir, vis = _hot_scene()
    prior = _fake_extractor()(ir, vis, t_ns=5, index=7, reason="first")
    assert prior.emphasis.shape == (14, 19)  # 640x480 -> shorter side 224 -> 304x224 -> 19x14 patches
    hot = cv2.resize((ir > 25000).astype(np.float32), (19, 14), interpolation=cv2.INTER_AREA) > 0.99
    person = prior.relevance["person"]
    assert person[hot].min() > 0.95 and person[~hot].max() < 0.05
    assert prior.relevance["car"].max() < 0.05
    assert np.allclose(prior.emphasis, 0.8 * person, atol=1e-5)
    assert (prior.t_ns, prior.index, prior.reason) == (5, 7, "first") and "person:1" in prior.key
    assert prior.semantic_ir.shape == (14, 19, E) and prior.global_ir.shape == (E,)
    assert abs(np.linalg.norm(prior.global_vis) - 1.0) < 1e-5


def test_dino_affinity_pooling_repairs_patches_clip_got_wrong():
    ir, vis = _hot_scene()
    wrong = [(5, 9), (6, 10)]  # inside the hot box; CLIP calls them background
    raw = _fake_extractor(flip=wrong)
    prior = raw(ir, vis)
    for r, c in wrong:
        assert prior.relevance["person"][r, c] > 0.9  # the object's other patches outvote them


def test_without_prompts_the_distinct_ir_region_is_emphasised():
    ir, vis = _hot_scene()
    prior = _fake_extractor(prompts=[])(ir, vis)
    assert prior.relevance == {}
    hot = cv2.resize((ir > 25000).astype(np.float32), (19, 14), interpolation=cv2.INTER_AREA) > 0.99
    assert prior.emphasis[hot].min() > 0.7 and prior.emphasis[~hot].max() < 0.1
    flat = _fake_extractor(prompts=[])(np.full((480, 640), 24000, np.uint16), vis)
    assert flat.emphasis.max() < 0.05  # one meaning everywhere: nothing stands out


def test_fake_prior_steers_fusion_towards_the_thermal_signature():
    ir, vis = _hot_scene()
    ir[40:120, 40:120] = 30000  # hot too, but the prior is about the big box only if prompts say so
    prior = _fake_extractor()(ir, vis)
    cfg = FusionConfig(mode="alpha", palette="white-hot", strength=0.3)
    plain = make_fuser(cfg).fuse(ir, vis)
    fuser = make_fuser(cfg)
    for _ in range(BLEND_FRAMES):
        steered = fuser.fuse(ir, vis, prior=prior)
    box = (slice(190, 290), slice(280, 360))
    assert steered[box].mean() > plain[box].mean() + 60  # hot box: much closer to white-hot IR
    background = (slice(400, 470), slice(500, 630))
    assert abs(steered[background].mean() - plain[background].mean()) < 2


# --- small random models through the real code paths ----------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return build_extractor(tiny_config(folder, prompts=["person", "dog"]), folder / "rig.yaml")


def test_tiny_models_give_a_prior_at_any_frame_size_and_cache_pos_embeddings_per_grid(tiny):
    ir = np.random.default_rng(0).integers(20000, 30000, (480, 640), dtype=np.uint16)
    vis = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    first = tiny(ir, vis)
    assert first.emphasis.shape == (4, 5) and 0.0 <= first.emphasis.min() <= first.emphasis.max() <= 0.8
    assert set(first.relevance) == {"person", "dog"} and first.semantic_vis.shape == (4, 5, 48)
    assert first.global_ir.shape == (32,)
    clip_pos, dino_pos = dict(tiny.clip._pos), dict(tiny.dino._pos)
    assert list(clip_pos) == [(4, 5)] and list(dino_pos) == [(4, 5)]
    again = tiny(ir, vis)
    assert tiny.clip._pos[(4, 5)] is clip_pos[(4, 5)] and tiny.dino._pos[(4, 5)] is dino_pos[(4, 5)]
    assert np.allclose(again.emphasis, first.emphasis, atol=1e-5)  # deterministic
    portrait = tiny(ir.T.copy(), np.ascontiguousarray(vis.transpose(1, 0, 2)))
    assert portrait.emphasis.shape == (5, 4) and set(tiny.dino._pos) == {(4, 5), (5, 4)}


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_the_extractor_on_each_device_gives_the_cpu_s_prior(tmp_path, tiny, device):
    """fp32 on the CPU; on CUDA the towers run in bf16 (affinities and pooling in fp32), so the
    prior's meaning (its features' directions) and objectness stay close to the fp32 ones."""
    torch.manual_seed(0)
    here = build_extractor(tiny_config(tmp_path, prompts=["person", "dog"], device=device), tmp_path / "rig.yaml")
    for mine, theirs in ((here.clip.visual, tiny.clip.visual), (here.dino.model, tiny.dino.model)):
        mine.load_state_dict(theirs.state_dict())  # the same random weights on both devices
    ir = np.random.default_rng(2).integers(20000, 30000, (240, 320), dtype=np.uint16)
    vis = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    got, want = here(ir, vis), tiny(ir, vis)
    assert got.semantic_ir.dtype == np.float32 and got.semantic_ir.shape == want.semantic_ir.shape
    cos = lambda a, b: (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))  # noqa: E731
    for field in ("semantic_ir", "semantic_vis", "global_vis"):
        assert cos(getattr(got, field), getattr(want, field)).min() > (0.9999 if device == "cpu" else 0.98), field
    assert np.abs(got.objectness - want.objectness).max() < (1e-3 if device == "cpu" else 0.1)


def test_our_forwards_match_the_libraries_own(tiny):
    """DINO at a non-native size against timm's dynamic-size forward; CLIP's global embedding
    against open_clip's encode_image at the native size."""
    dino = tiny.dino.model
    captured = {}
    hook = dino.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: captured.setdefault("qkv", o))
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        dino.forward_features(x)
        ours = tiny.dino(x)
    hook.remove()
    width = ours.shape[-1]
    theirs = captured["qkv"][:, dino.num_prefix_tokens:, 2 * width:].reshape(ours.shape)
    assert torch.allclose(ours, theirs, atol=1e-5)
    visual = tiny.clip.visual
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        pooled, inter, dense = tiny.clip(x)
        assert torch.allclose(pooled, visual(x), atol=1e-5)
    assert inter.shape == (2, 4, 4, 48) and dense.shape == (2, 4, 4, 32)


def _hooked(visual, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """open_clip's own forward of `x` with forward hooks on resblocks[layer].ln_2 (SPGFusion's
    hook) and on the block itself: (ln_2 output, block output, pooled embedding); the tokens
    (B, 1 + gh*gw, C) batch first, as SPGFusion permutes them."""
    block = visual.transformer.resblocks[layer]
    captured = {}
    hooks = [block.ln_2.register_forward_hook(lambda m, i, o: captured.setdefault("ln_2", o)),
             block.register_forward_hook(lambda m, i, o: captured.setdefault("block", o))]
    try:
        with torch.inference_mode():
            pooled = visual(x)
    finally:
        for hook in hooks:
            hook.remove()
    first = (lambda t: t) if visual.transformer.batch_first else (lambda t: t.transpose(0, 1))
    return first(captured["ln_2"]), first(captured["block"]), pooled


def test_clip_tap_is_what_a_hook_on_ln_2_sees_and_the_forward_is_unchanged(tiny):
    visual, layer = tiny.clip.visual, tiny.clip.layer
    assert layer == 1  # -2 of 3 blocks: a block in the middle, so the blocks after it see its output
    x = torch.randn(2, 3, 64, 64)
    ln_2, block_out, theirs = _hooked(visual, layer, x)
    with torch.inference_mode():
        pooled, inter, _ = tiny.clip(x)
    assert torch.allclose(inter, ln_2[:, 1:].reshape(inter.shape), atol=1e-5)
    assert torch.allclose(pooled, theirs, atol=1e-5)  # the split block adds up to block(x)
    assert not torch.allclose(inter, block_out[:, 1:].reshape(inter.shape), atol=1e-2)  # not the old tap


def test_clip_tap_also_holds_for_a_sequence_first_transformer(tiny):
    visual, layer = tiny.clip.visual, tiny.clip.layer
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        before = tiny.clip(x)
    visual.transformer.batch_first = False  # open_clip's older layout: (tokens, B, C) between blocks
    for block in visual.transformer.resblocks:
        block.attn.batch_first = False
    try:
        ln_2, _, theirs = _hooked(visual, layer, x)
        with torch.inference_mode():
            after = tiny.clip(x)
    finally:
        visual.transformer.batch_first = True
        for block in visual.transformer.resblocks:
            block.attn.batch_first = True
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(after[1], ln_2[:, 1:].reshape(after[1].shape), atol=1e-5)
    assert torch.allclose(after[0], theirs, atol=1e-5)


def test_native_size_reads_the_frame_at_its_own_size_on_whole_patches(tmp_path):
    extractor = build_extractor(tiny_config(tmp_path, size="native"), "rig.yaml")
    rng = np.random.default_rng(2)
    for h, w in ((512, 640), (500, 650)):
        ir = rng.integers(20000, 30000, (h, w), dtype=np.uint16)
        vis = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        prior = extractor(ir, vis)
        assert prior.emphasis.shape == (round(h / 16), round(w / 16)), (h, w)
        assert prior.semantic_ir.shape[:2] == prior.emphasis.shape and "size=native" in prior.key
        mw, mh = extractor.input_size((w, h))
        assert abs(mw - w) <= 8 and abs(mh - h) <= 8  # at most half a patch of resize
    assert extractor.input_size((640, 512)) == (640, 512)


def test_clip_and_dino_with_different_patch_sizes_share_the_dino_grid(tmp_path):
    spec = dict(TINY_CLIP, vision_cfg=dict(TINY_CLIP["vision_cfg"], patch_size=32))
    (tmp_path / "tiny32.json").write_text(json.dumps(spec))
    cfg = tiny_config(tmp_path, clip=ClipConfig(model=str(tmp_path / "tiny32.json"), weights="random", layer=-1))
    prior = build_extractor(cfg, "rig.yaml")(np.zeros((480, 640), np.uint8), np.zeros((480, 640, 3), np.uint8))
    assert prior.emphasis.shape == (4, 6)  # 64 rounded to multiples of 32 -> 96x64 -> DINO's 16-px grid


def test_layer_out_of_range_and_non_vit_models_are_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match=r"priors.clip.layer: .* has 3 blocks; expected -3..2"):
        build_extractor(tiny_config(tmp_path, clip=ClipConfig(model=str(tiny_clip_file(tmp_path)),
                                                               weights="random", layer=5)), "rig.yaml")
    with pytest.raises(UsageError, match="priors.dino.model: test_resnet is not a timm ViT"):
        build_extractor(tiny_config(tmp_path, dino=DinoConfig(model="test_resnet", weights="random")), "rig.yaml")


# --- weights: tags, files, the hub cache ------------------------------------------------------


def fake_hub_cache(cache: Path, repo_id: str, filename: str, payload: bytes) -> Path:
    """Lay out `payload` as the hub's cache does: blobs named by SHA-256, a snapshot link, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    sha = hashlib.sha256(payload).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(payload)
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).symlink_to(Path("../..") / "blobs" / sha)
    return snapshot / filename


def test_tags_resolve_to_hub_repos_like_open_clip_and_timm_do():
    ref = clip_ref(ClipConfig())
    assert ref.repo_id == "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
    assert ref.filenames[0] == "open_clip_model.safetensors"
    assert dino_ref(DinoConfig()).repo_id == "timm/vit_small_patch16_224.dino"
    with pytest.raises(UsageError, match="'lion' is not an open_clip pretrained tag of ViT-B-16; its tags: .*laion2b_s34b_b88k"):
        clip_ref(ClipConfig(weights="lion"))
    with pytest.raises(UsageError, match="'dion' is not a timm pretrained tag .* dino"):
        dino_ref(DinoConfig(weights="dion"))
    with pytest.raises(UsageError, match="timm has no model 'vit_smol'"):
        dino_ref(DinoConfig(model="vit_smol"))


def test_a_tag_in_the_hub_cache_loads_and_a_missing_one_names_the_fetch_command(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_vit", num_classes=0)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    cached = fake_hub_cache(tmp_path / "hub", "timm/test_vit.r160_in1k", "model.safetensors",
                            (tmp_path / "w.safetensors").read_bytes())
    cfg = tiny_config(tmp_path, dino=DinoConfig(model="test_vit", weights="r160_in1k"), cache_dir=tmp_path / "hub")
    assert locate(dino_ref(cfg.dino), cfg.cache_dir) == cached
    assert check_hash(cached) is True
    extractor = build_extractor(cfg, "rigs/x.yaml")
    loaded = extractor.dino.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert extractor.dino.mean == (0.5, 0.5, 0.5)  # the tag's own preprocessing came with it
    # Another tag of the same model is not in that cache: one line naming the command.
    missing = tiny_config(tmp_path, dino=DinoConfig(model="test_vit", weights="nope"), cache_dir=tmp_path / "hub")
    with pytest.raises(UsageError, match="not a timm pretrained tag"):
        build_extractor(missing, "rigs/x.yaml")
    empty = tiny_config(tmp_path, dino=DinoConfig(model="test_vit", weights="r160_in1k"), cache_dir=tmp_path / "none")
    with pytest.raises(UsageError) as err:
        weights_paths(empty, "rigs/x.yaml")
    assert "dino test_vit 'r160_in1k' (hub timm/test_vit.r160_in1k) is not on this machine" in str(err.value)
    assert "streamfuse models fetch rigs/x.yaml" in str(err.value) and "\n" not in str(err.value)
    cached.resolve().write_bytes(b"truncated")
    assert check_hash(cached) is False


def test_local_checkpoint_files_load_and_a_wrong_one_is_one_line(tmp_path):
    import open_clip

    spec = tiny_clip_file(tmp_path)
    open_clip.add_model_config(spec)
    source = open_clip.create_model("tiny-clip")
    torch.save(source.state_dict(), tmp_path / "clip.pt")
    cfg = tiny_config(tmp_path, clip=ClipConfig(model=str(spec), weights=str(tmp_path / "clip.pt"), layer=-1))
    extractor = build_extractor(cfg, "rig.yaml")
    assert torch.equal(extractor.clip.visual.proj, source.visual.proj)
    import timm
    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), tmp_path / "dino.pt")
    wrong = tiny_config(tmp_path, clip=ClipConfig(model=str(spec), weights=str(tmp_path / "dino.pt")))
    with pytest.raises(UsageError) as err:
        build_extractor(wrong, "rig.yaml")
    assert str(err.value).startswith("priors.clip: cannot load") and "\n" not in str(err.value)


# --- refresh policy and worker -------------------------------------------------------------


def _offer(image_ir, image_vis, t_s, index):
    return Offer(image_ir, image_vis, round(t_s * 1e9), index)


def _scene(seed):
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 1, (480, 640)).astype(np.float32), (0, 0), 25)
    grey = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return (grey.astype(np.uint16) * 40 + 20000), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def test_policy_reasons_in_order_first_scene_frames_age():
    ir, vis = _scene(1)
    policy = RefreshPolicy(every_frames=10, max_age_s=1.0, scene_change=0.5)
    assert policy.due(_offer(ir, vis, 0.0, 0)) == "first"
    policy.refreshed(_offer(ir, vis, 0.0, 0))
    assert policy.due(_offer(ir, vis, 0.3, 9)) is None
    assert policy.due(_offer(ir, vis, 0.3, 10)) == "frames"
    assert policy.due(_offer(ir, vis, 1.0, 5)) == "age"
    other_ir, other_vis = _scene(2)
    assert policy.due(_offer(ir, other_vis, 0.1, 1)) == "scene"  # either camera can show the cut
    assert policy.due(_offer(other_ir, vis, 0.1, 1)) == "scene"


def test_scene_test_ignores_exposure_and_gain_but_not_a_cut():
    ir, vis = _scene(1)
    policy = RefreshPolicy(every_frames=0, max_age_s=0, scene_change=0.5)
    policy.refreshed(_offer(ir, vis, 0, 0))
    brighter = cv2.convertScaleAbs(vis, alpha=0.6, beta=50)
    noisy = np.clip(vis + np.random.default_rng(0).normal(0, 6, vis.shape), 0, 255).astype(np.uint8)
    regain = (ir.astype(np.float32) * 1.3 - 3000).astype(np.uint16)
    for ir2, vis2 in [(regain, brighter), (ir, noisy)]:
        assert policy.scene_distance(_offer(ir2, vis2, 0, 1)) < 0.2
    cut_ir, cut_vis = _scene(5)
    assert policy.scene_distance(_offer(cut_ir, cut_vis, 0, 1)) > 0.7
    assert thumbnail(vis).shape == (24, 32)


def test_worker_publishes_without_blocking_and_reraises_its_error_on_the_caller():
    ir, vis = _scene(1)
    computing = []

    def slow(ir, vis, *, t_ns, index, reason):
        computing.append(index)
        time.sleep(0.3)
        return Prior(np.zeros((2, 2), np.float32), *(np.zeros(1, np.float32),) * 4, t_ns=t_ns, index=index,
                     reason=reason, refresh_s=0.3)

    worker = PriorWorker(slow, RefreshPolicy(every_frames=1, max_age_s=0, scene_change=0), nice=5)
    worker.start()
    start = time.perf_counter()
    offers = 0
    while time.perf_counter() - start < 0.9:
        worker.offer(_offer(ir, vis, offers / 30, offers))  # a 30 fps loop that never waits
        worker.latest()
        offers += 1
        time.sleep(1 / 300)
    assert worker.stop()
    assert offers > 150  # the loop ran at its own pace while refreshes took 0.3 s each
    assert 2 <= worker.refresh_time.count <= 4 and worker.reasons["first"] == 1
    assert computing[1] > 10  # the next refresh started from the newest pair, not the next one
    assert worker.latest().index == computing[worker.refresh_time.count - 1]

    def broken(*args, **kwargs):
        raise MemoryError("CUDA out of memory.\nTried to allocate 2 GiB")

    worker = PriorWorker(broken, RefreshPolicy(every_frames=1, max_age_s=0, scene_change=0))
    worker.start()
    worker.offer(_offer(ir, vis, 0, 0))
    deadline = time.monotonic() + 5
    with pytest.raises(RuntimeFailure, match="^prior worker: CUDA out of memory. Tried to allocate 2 GiB$"):
        while time.monotonic() < deadline:
            worker.latest()
            time.sleep(0.01)
    worker.stop()
