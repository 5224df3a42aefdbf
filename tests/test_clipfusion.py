"""CLIPFusion's prompt targets (streamfuse.train.clipfusion) on a tiny random CLIP built by the priors'
own loader: the learned-prompt text path and the preprocessing against open_clip's own, stage 1
on synthetic IR and visible crops, the stage-2 loss's gradients, checkpoints, and the errors.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_priors import TINY_CLIP, tiny_clip_file

from streamfuse.capture.scene import SyntheticScene
from streamfuse.errors import UsageError
from streamfuse.priors import ClipConfig, DinoConfig, PriorConfig
from streamfuse.train.clipfusion import (
    CLASSES,
    FUSED,
    INFRARED,
    VISIBLE,
    load_prompt_targets,
)

CROP = 128


def tiny_targets(folder, seed: int = 0, n_ctx: int = 8, name: str = "tiny-clip"):
    """Prompt targets on a random tiny CLIP (weights seeded), loaded as a run loads a real one."""
    spec = tiny_clip_file(folder) if name == "tiny-clip" else folder / f"{name}.json"
    spec.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(seed)
    cfg = PriorConfig(clip=ClipConfig(model=str(spec), weights="random", layer=-1),
                      dino=DinoConfig(weights="random"))
    return load_prompt_targets(cfg, "rig.yaml", n_ctx=n_ctx, allow_random=True)


def _crops(seed: int, night: bool, n: int, t_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n registered-size IR (n,1,128,128) and visible BGR (n,3,128,128) crops in 0..1 of one street."""
    scene = SyntheticScene(seed=seed, night=night, ir_bits=8)
    rng = np.random.default_rng(seed)
    ir, vis = [], []
    for i in range(n):
        y, x = rng.integers(0, 480 - CROP), rng.integers(0, 640 - CROP)
        ir.append(scene.render_ir(t_s + 0.3 * i, i)[None, y:y + CROP, x:x + CROP])
        vis.append(scene.render_vis(t_s + 0.3 * i, i)[y:y + CROP, x:x + CROP].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(ir)).float() / 255, torch.from_numpy(np.stack(vis)).float() / 255


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's tensors are too small to share out: on a busy 2-core machine a second
    torch thread makes these tests ten times slower, not faster."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def crops():
    """Training crops (a day and a night street) and held-out crops (two other streets, later)."""
    train = [_crops(1, False, 8, 0.0), _crops(2, True, 8, 0.0)]
    held = [_crops(3, False, 6, 5.0), _crops(4, True, 6, 5.0)]
    return {name: (torch.cat([ir for ir, _ in sets]), torch.cat([vis for _, vis in sets]))
            for name, sets in (("train", train), ("held", held))}


def _separation(targets, ir, vis) -> float:
    """Share of images that score higher on their own camera's prompt than on the other's."""
    p_ir, p_vis = targets.probabilities(ir), targets.probabilities(vis)
    right = torch.cat([p_ir[:, INFRARED] > p_ir[:, VISIBLE], p_vis[:, VISIBLE] > p_vis[:, INFRARED]])
    return right.float().mean().item()


def test_learned_prompts_go_through_open_clips_own_text_encoder(tmp_path):
    import open_clip

    targets = tiny_targets(tmp_path)
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    tokens = tokenizer([" ".join(["X"] * targets.n_ctx) + " " + words for _, words in CLASSES])
    with torch.no_grad():
        targets.ctx.copy_(targets.clip.token_embedding(tokens[:, 1:1 + targets.n_ctx]))
        expected = F.normalize(targets.clip.encode_text(tokens), dim=-1)
        assert torch.allclose(targets.text_features(), expected, atol=1e-5)
        targets.ctx[FUSED] = torch.randn_like(targets.ctx[FUSED])  # each prompt has its own context
        moved = targets.text_features()
    assert torch.allclose(moved[:FUSED], expected[:FUSED], atol=1e-5)
    assert (moved[FUSED] - expected[FUSED]).abs().max() > 0.05


def test_preprocessing_matches_open_clips_image_transform(tmp_path):
    import open_clip
    from PIL import Image

    targets = tiny_targets(tmp_path)
    yy, xx = np.mgrid[0:96, 0:160].astype(np.float32)
    bgr = np.stack([xx / 160, yy / 96, 0.5 + 0.4 * np.sin(xx / 9) * np.cos(yy / 7)], axis=-1)
    bgr_u8 = np.round(255 * bgr).astype(np.uint8)
    mean, std = targets._mean.flatten().tolist(), targets._std.flatten().tolist()
    transform = open_clip.image_transform(targets.image_size, is_train=False, mean=mean, std=std)
    reference = transform(Image.fromarray(np.ascontiguousarray(bgr_u8[..., ::-1])))
    batch = torch.from_numpy(bgr_u8).permute(2, 0, 1)[None].float() / 255
    ours = targets.clip_input(batch)[0]
    assert ours.shape == reference.shape == (3, *targets.image_size)
    assert (ours - reference).abs().mean() < 0.02
    misread = targets.clip_input(batch.flip(1))[0]  # RGB taken for BGR: the test would see it
    assert (misread - reference).abs().mean() > 0.2
    grey = batch[:, 1:2]
    assert torch.allclose(targets.clip_input(grey), targets.clip_input(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"expected \(B, 1\|3, H, W\)"):
        targets.clip_input(batch[0])


def test_fit_lowers_its_loss_and_separates_held_out_ir_from_visible(tmp_path, crops):
    targets = tiny_targets(tmp_path)
    ir, vis = crops["train"]
    before = targets.fit(ir, vis, steps=0)
    after = targets.fit(ir, vis, steps=100)
    assert after["total"] < 0.5 * before["total"]
    assert after["infrared"] < before["infrared"] and after["visible"] < before["visible"]
    assert after["accuracy"] >= 0.85
    assert _separation(targets, *crops["held"]) >= 0.8  # chance is 0.5
    with torch.no_grad():  # no fused images: the fused prompt sits between the other two
        text = targets.text_features()
    between = text[FUSED] @ F.normalize(text[INFRARED] + text[VISIBLE], dim=0)
    assert between > 0.75 and between > max(text[FUSED] @ text[INFRARED], text[FUSED] @ text[VISIBLE])


def test_fused_images_teach_the_fused_prompt(tmp_path, crops):
    targets = tiny_targets(tmp_path)
    (ir, vis), (held_ir, held_vis) = crops["train"], crops["held"]
    mix, held_mix = 0.5 * (ir + vis), 0.5 * (held_ir + held_vis)  # a stand-in fuser's outputs
    before = targets.probabilities(held_mix)[:, FUSED].mean()
    result = targets.fit(ir, vis, mix, steps=100)
    probs = targets.probabilities(held_mix).mean(dim=0)
    assert probs[FUSED] > before + 0.1 and probs.argmax() == FUSED
    assert _separation(targets, held_ir, held_vis) >= 0.8 and result["fused"] < 1.0


def test_loss_is_differentiable_in_the_fused_image_and_clip_stays_frozen(tmp_path, crops):
    targets = tiny_targets(tmp_path)
    ir, vis = crops["train"]
    targets.fit(ir, vis, steps=50)
    assert [name for name, _ in targets.named_parameters()] == ["ctx"]
    targets.train()
    assert not targets.clip.training  # frozen CLIP stays in eval mode
    assert not any(p.requires_grad for p in targets.clip.parameters())
    for start in (ir[:8], vis[:8]):  # grey and BGR fused images
        fused = start.clone().requires_grad_(True)
        loss = targets.loss(fused)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    assert all(p.grad is None for p in targets.clip.parameters())
    assert targets.ctx.grad is None  # the prompts are fixed targets in stage 2
    # It is the cross-entropy towards the fused prompt.
    assert torch.isclose(targets.loss(vis[:8]), -targets.probabilities(vis[:8])[:, FUSED].log().mean(), atol=1e-5)
    # The gradient points somewhere useful: a few steps on the pixels lower the loss.
    pixels = ir[:8].clone().requires_grad_(True)
    opt = torch.optim.Adam([pixels], lr=0.01)
    first = targets.loss(pixels).item()
    for _ in range(10):
        opt.zero_grad()
        targets.loss(pixels).backward()
        opt.step()
    assert targets.loss(pixels).item() < first - 0.05


def test_prompts_round_trip_through_state_dict_and_refuse_another_clip(tmp_path, crops):
    targets = tiny_targets(tmp_path)
    targets.fit(*crops["train"], steps=20)
    buffer = io.BytesIO()
    torch.save(targets.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert set(state) == {"ctx", "_extra_state"}  # the prompts only, not CLIP's weights
    fresh = tiny_targets(tmp_path)
    sample = crops["held"][1][:4]
    assert not torch.allclose(fresh.probabilities(sample), targets.probabilities(sample))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ctx, targets.ctx)
    assert torch.allclose(fresh.probabilities(sample), targets.probabilities(sample))  # text cache refreshed
    assert torch.allclose(fresh.loss(sample), targets.loss(sample))
    with pytest.raises(UsageError, match="learned with CLIP \"tiny-clip.json 'random'\", this run uses "
                                         "\"other-clip.json 'random'\""):
        tiny_targets(tmp_path, name="other-clip").load_state_dict(state)
    with pytest.raises(UsageError, match="have 8 context tokens, this run expects 4"):
        tiny_targets(tmp_path, n_ctx=4).load_state_dict(state)


def test_missing_or_random_weights_are_one_line_errors(tmp_path):
    missing = PriorConfig(clip=ClipConfig(), cache_dir=tmp_path / "empty-hub")  # ViT-B-16 laion tag, not cached
    with pytest.raises(UsageError) as err:
        load_prompt_targets(missing, "rigs/priors.yaml")
    message = str(err.value)
    assert "clip ViT-B-16 'laion2b_s34b_b88k'" in message and "is not on this machine" in message
    assert "streamfuse models fetch rigs/priors.yaml" in message and "\n" not in message
    assert "dino" not in message  # training needs no DINO, so a missing DINO is not reported
    no_file = PriorConfig(clip=ClipConfig(weights=str(tmp_path / "clip.pt")))
    with pytest.raises(UsageError, match=r"priors.clip.weights: .*clip.pt does not exist; fix the path"):
        load_prompt_targets(no_file, "rig.yaml")
    with pytest.raises(UsageError, match="priors.clip.weights is `random`, and CLIPFusion's targets need"):
        load_prompt_targets(PriorConfig(clip=ClipConfig(weights="random")), "rig.yaml")
