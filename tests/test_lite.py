"""The `lite` learned fusion mode: its formula (numpy vs torch), shipped weights, prior, training."""
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the lite fusion mode needs the `learn` extra (torch)")

from streamfuse.capture.scene import SyntheticScene  # noqa: E402
from streamfuse.errors import UsageError  # noqa: E402
from streamfuse.fuse import (  # noqa: E402
    FusionConfig,
    lite_targets,  # noqa: E402
    make_fuser,
)
from streamfuse.fuse.lite import WEIGHTS, LiteFuser  # noqa: E402
from streamfuse.models import lite, lite_torch  # noqa: E402
from streamfuse.thermal import ir_to_u8  # noqa: E402
from streamfuse.train import loop as training  # noqa: E402
from streamfuse.train.data import load_clips  # noqa: E402
from tests.helpers import data_path  # noqa: E402


def _lumas(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 2.0)
    b = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 1.0)
    return a, b


def _frame():
    scene = SyntheticScene(seed=3, night=True)
    ir = cv2.warpPerspective(scene.render_ir(1.0, 0), scene.H_vis_from_ir, scene.vis_size)
    return ir, scene.render_vis(1.0, 0)


def test_numpy_and_torch_application_agree():
    torch.manual_seed(1)
    net = lite_torch.build_net()
    for p in net.parameters():  # away from the start, so the maps vary per pixel
        torch.nn.init.normal_(p, 0.0, 0.3)
    a, b = _lumas(136, 144)
    ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
    feats, a_low, b_low = lite_torch.features_torch(ta, tb)
    prepared = lite.features_numpy(a, b)
    assert np.allclose(prepared.features, feats[0].numpy(), atol=1e-4)
    with torch.no_grad():
        maps = net(feats)
        probs = lite_torch.probabilities_torch(maps)
        fused_torch = lite_torch.apply_torch(ta, tb, probs, a_low, b_low)[0, 0].numpy()
    assert maps.shape == (1, 4, 34, 36) and float(probs[:, 0].std()) > 0.01
    probs_numpy = lite.probabilities_numpy(maps[0].numpy())
    assert np.abs(probs_numpy - probs[0].numpy()).max() < 1e-5
    fused_numpy = lite.apply_numpy(a, b, probs_numpy, prepared)
    assert fused_numpy.shape == a.shape
    assert np.abs(fused_numpy - fused_torch).max() < 1e-4


def test_numpy_inference_equals_the_torch_network_on_real_pairs():
    # The per-frame path (numpy network, read without torch) against torch with the same file:
    # the first pair of every evaluation set. The networks on the same features: within 1e-4
    # of the logits' scale; the whole path (features, network, formula) within 1e-3 of the
    # fused luma in 0..1 (a quarter grey level): float32 summation order apart.
    from streamfuse.fuse.lite import load_params
    from streamfuse.quality.evaluate import find_groups, load_pair

    params = load_params()
    net = lite_torch.build_net().eval()
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True)["model"])
    for name, pairs in find_groups(data_path("pairs")).items():
        loaded = load_pair(pairs[0])
        h, w = (s - s % lite.SCALE for s in loaded.ir.shape[:2])
        a = ir_to_u8(loaded.ir)[:h, :w].astype(np.float32) / 255
        b = cv2.cvtColor(loaded.vis, cv2.COLOR_BGR2GRAY)[:h, :w].astype(np.float32) / 255
        prepared = lite.features_numpy(a, b)
        maps = lite.forward_numpy(params, prepared.features)
        fused = lite.apply_numpy(a, b, lite.probabilities_numpy(maps), prepared)
        ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
        with torch.no_grad():
            feats, a_low, b_low = lite_torch.features_torch(ta, tb)
            same_feats = net(torch.from_numpy(prepared.features)[None])[0].numpy()
            maps_torch = net(feats)
            fused_torch = lite_torch.apply_torch(ta, tb, lite_torch.probabilities_torch(maps_torch), a_low, b_low)
        assert np.abs(maps - same_feats).max() < 1e-4 * max(1.0, np.abs(maps).max()), name
        assert np.abs(fused - fused_torch[0, 0].numpy()).max() < 1e-3, name


def test_the_weights_reader_gives_what_torch_load_gives():
    from streamfuse.fuse.weights import read_torch_file

    mine, theirs = read_torch_file(WEIGHTS), torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert mine.keys() == theirs.keys() and mine["config"] == theirs["config"]
    for key, value in theirs["model"].items():
        assert mine["model"][key].dtype == np.float32 and np.array_equal(mine["model"][key], value.numpy()), key


def _constant(shape, w_d, w_b, kappa, boost):
    return np.stack([np.full(lite.low_size(shape), v, np.float32) for v in (w_d, w_b, kappa, boost)])


def test_constant_maps_give_the_plain_formula():
    a, b = _lumas()
    prepared = lite.features_numpy(a, b)
    # All to one camera, no additive base, no boost: that camera's luma.
    assert np.abs(lite.apply_numpy(a, b, _constant(a.shape, 1, 1, 0, 0), prepared) - a).max() < 1e-4
    assert np.abs(lite.apply_numpy(a, b, _constant(a.shape, 0, 0, 0, 0), prepared) - b).max() < 1e-4
    # A fully additive base under the visible detail; the bases are box means over the
    # 1/4-size cells (a dim visible image: the exposure guard of bright regions stays off).
    b = 0.2 + 0.3 * b
    prepared = lite.features_numpy(a, b)
    cells = lite.low_size(a.shape)
    r = 2 * (lite.BASE_RADIUS // lite.SCALE) + 1
    box = lambda x: cv2.blur(cv2.resize(x, cells[::-1], interpolation=cv2.INTER_AREA), (r, r),  # noqa: E731
                             borderType=cv2.BORDER_REFLECT_101)
    up = lambda x: cv2.resize(x, a.shape[::-1], interpolation=cv2.INTER_LINEAR)  # noqa: E731
    k = lite.ADDITIVE
    base = k * (box(a) + box(b)) + (0.5 - k) * (prepared.a_low.mean() + prepared.b_low.mean())
    assert lite.KNEE < base.min() and base.max() < 1 - lite.KNEE and box(b).max() < lite.EXPOSED[0]
    expected = up(base) + (b - up(box(b)))
    assert np.abs(lite.apply_numpy(a, b, _constant(a.shape, 0, 0, 1, 0), prepared) - expected).max() < 1e-3


def test_the_untrained_network_gives_each_detail_to_the_camera_that_has_it():
    # IR textured on the left, visible textured on the right: the start of the network
    # (the saliency rule of guided-filter fusion) takes each side's detail from its camera.
    rng = np.random.default_rng(4)
    texture = cv2.GaussianBlur(rng.random((160, 256), dtype=np.float32), (0, 0), 1.5)
    a = np.full((160, 256), 0.5, np.float32)
    b = a.copy()
    a[:, :128] += 2 * (texture[:, :128] - texture.mean())
    b[:, 128:] += 2 * (texture[:, 128:] - texture.mean())
    net = lite_torch.build_net().eval()
    prepared = lite.features_numpy(a, b)
    with torch.no_grad():
        maps = net(torch.from_numpy(prepared.features)[None])[0].numpy()
    probs = lite.probabilities_numpy(maps)
    w_d = probs[0]
    assert w_d[:, :28].min() > 0.9 and w_d[:, -28:].max() < 0.1
    fused = lite.apply_numpy(a, b, probs, prepared)
    left, right = (slice(16, -16), slice(16, 112)), (slice(16, -16), slice(144, 240))
    assert np.corrcoef(fused[left].ravel(), a[left].ravel())[0, 1] > 0.95
    assert np.corrcoef(fused[right].ravel(), b[right].ravel())[0, 1] > 0.95


def test_shipped_weights_fuse_a_frame_keeping_the_visible_chroma():
    fuser = make_fuser(FusionConfig(mode="lite", hot_tint=False))  # the tint: test_fuse.py
    ir, vis = _frame()
    assert ir.dtype == np.uint16
    out = fuser.fuse(ir, vis)
    assert out.shape == vis.shape and out.dtype == np.uint8
    chroma_out = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)[..., 1:].astype(int)
    chroma_vis = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[..., 1:].astype(int)
    assert np.abs(chroma_out - chroma_vis).mean() < 2.0
    grey = fuser.fuse(ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY))
    assert grey.shape == vis.shape and (grey[..., 0] == grey[..., 2]).all()
    # The IR shows through: the fused luma follows the IR more than the visible luma alone.
    y = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float32)
    ir8 = cv2.normalize(ir, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_32F)
    vis_y = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float32)
    assert np.corrcoef(y.ravel(), ir8.ravel())[0, 1] > np.corrcoef(vis_y.ravel(), ir8.ravel())[0, 1]


def test_the_prior_hands_the_marked_region_to_the_ir():
    fuser = LiteFuser(FusionConfig(mode="lite"))
    ir, vis = _frame()
    a = ir_to_u8(ir).astype(np.float32) / 255
    b = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    plain, _ = fuser.probabilities(a, b)
    emphasis = np.zeros((12, 16), np.float32)
    emphasis[:, 8:] = 1.0   # the right half is marked
    fuser.reset()
    prior = SimpleNamespace(emphasis=emphasis)
    for _ in range(10):     # past the blend-in frames
        marked, _ = fuser.probabilities(a, b, prior)
    w = marked.shape[2]
    assert np.allclose(marked[:, :, : w // 2 - 2], plain[:, :, : w // 2 - 2], atol=1e-5)
    right = (slice(None), slice(w // 2 + 2, None))
    assert np.allclose(marked[0][right], 1.0) and np.allclose(marked[1][right], 1.0)
    assert np.allclose(marked[2][right], 0.0) and np.allclose(marked[3][right], 0.0)
    assert (plain[0][right] < 0.99).any() and (plain[2][right] > 0.01).all()  # the prior changed them
    # Where marked, the fused luma is the IR (to a few levels, where the IR base is clear of the
    # soft knee of its darkest and brightest 15%, inside the IR's field of view and away from
    # the warm targets, which are lifted above the IR's own contrast); elsewhere it is not.
    fuser.reset()
    for _ in range(10):
        fuser.probabilities(a, b, prior)
    fused_marked = fuser.fuse(ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY), prior)[..., 0].astype(int)
    ir8 = np.rint(a * 255).astype(int)
    r = 2 * lite.BASE_RADIUS + 1
    base = cv2.blur(a, (r, r), borderType=cv2.BORDER_REFLECT_101)[:, 360:]
    clear = (base > lite.KNEE + 0.02) & (base < 1 - lite.KNEE - 0.02)
    inside = cv2.erode((ir > 0).astype(np.uint8), np.ones((2 * lite_targets.FOV_FEATHER + 5,) * 2, np.uint8))
    excess = a - lite_targets.background(a)
    warm = cv2.dilate((excess > excess.mean() + lite_targets.HOT_LOW * excess.std()).astype(np.uint8),
                      np.ones((9, 9), np.uint8))
    clear &= (inside[:, 360:] > 0) & (warm[:, 360:] == 0)
    assert clear.mean() > 0.2
    off = np.abs(fused_marked[:, 360:] - ir8[:, 360:])[clear]
    assert off.max() <= 3 and off.mean() < 0.5  # the IR is destriped first
    assert np.abs(fused_marked[:, :280] - ir8[:, :280]).mean() > 5


def test_missing_or_foreign_weights_are_a_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError, match="weights file .*nope.pt not found"):
        LiteFuser(FusionConfig(mode="lite"), weights=tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="does not hold lite weights"):
        LiteFuser(FusionConfig(mode="lite"), weights=junk)


def test_shipped_weights_are_small_and_trained():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 64_000
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert state["steps"] > 0
    assert float(state["model"]["body.6.weight"].abs().sum()) > 0  # moved off the zero start


def _tiny_clips():
    a, b = _lumas(168, 168, seed=5)
    frame = lambda k: np.stack([np.roll(a, k, 1)] + [np.roll(b, k, 1)] * 3)  # noqa: E731  IR, B, G, R
    return [np.stack([frame(k) for k in range(3)])]


def test_train_resumes_from_a_checkpoint_exactly(tmp_path):
    clips = _tiny_clips()
    straight = training.TrainConfig(steps=4, batch=2, every=2, seed=7)
    training.train(straight, clips, tmp_path / "a.pt", tmp_path / "a-ck.pt", progress=False)
    first = training.TrainConfig(steps=2, batch=2, every=2, seed=7)
    training.train(first, clips, tmp_path / "b.pt", tmp_path / "b-ck.pt", progress=False)
    losses = training.train(straight, clips, tmp_path / "b.pt", tmp_path / "b-ck.pt", resume=True, progress=False)
    assert set(losses) >= {"vif", "qabf", "scd", "consistency", "temporal", "total"}
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["steps"] == b["steps"] == 4
    for name, value in a["model"].items():
        assert torch.allclose(value, b["model"][name]), name
    with pytest.raises(UsageError, match="no checkpoint"):
        training.train(straight, clips, tmp_path / "c.pt", tmp_path / "missing.pt", resume=True, progress=False)


def test_train_refuses_evaluation_pairs(tmp_path):
    pairs = tmp_path / "pairs" / "set"
    (pairs / "ir").mkdir(parents=True)
    with pytest.raises(UsageError, match="evaluation set"):
        load_clips([pairs])


def test_train_says_in_one_line_what_is_wrong_with_its_clips(tmp_path, capsys):
    from streamfuse.cli import main

    clip = tmp_path / "clip"
    for role in ("ir", "vis"):
        (clip / role).mkdir(parents=True)
    cv2.imwrite(str(clip / "ir" / "0.png"), np.zeros((200, 200), np.uint8))
    cv2.imwrite(str(clip / "vis" / "0.png"), np.zeros((200, 240, 3), np.uint8))
    (clip / "ir" / "1.png").write_bytes(b"not an image")
    (tmp_path / "empty").mkdir()
    cases = {tmp_path / "nowhere": "no such folder", tmp_path / "empty": "holds no clip",
             clip: "registered frames of one size"}
    for folder, message in cases.items():
        assert main(["train", "--clips", str(folder), "--steps", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    cv2.imwrite(str(clip / "vis" / "0.png"), np.zeros((200, 200, 3), np.uint8))
    assert main(["train", "--clips", str(clip), "--steps", "1", "--quiet"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_train_options_of_clipfusion_need_it_and_are_named_as_typed(capsys):
    from streamfuse.cli import main

    cases = {("--refit-every", "2"): "--refit-every refits CLIPFusion's prompts; add --clipfusion RIG",
             ("--probe-crops", "8"): "--probe-crops sets how many crops CLIPFusion's prompts are fitted on; add --clipfusion",
             ("--probe-crops", "0"): "train: --probe-crops: expected a whole number >= 1, got 0",
             ("--refit-every", "-1"): "train: --refit-every: expected a whole number >= 0, got -1"}
    for option, message in cases.items():
        assert main(["train", *option, "--steps", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def _clip_file_rig(tmp_path) -> Path:
    """A rig whose CLIP has its weights in a file, built by the same code as the real ones (tiny, random)."""
    open_clip = pytest.importorskip("open_clip")
    from tests.test_priors import tiny_clip_file

    spec = tiny_clip_file(tmp_path)
    open_clip.add_model_config(str(tmp_path))
    model = open_clip.create_model(spec.stem)
    torch.save(model.state_dict(), tmp_path / "tiny-clip.pt")
    rig = tmp_path / "rig.yaml"
    demo = (Path(__file__).resolve().parent.parent / "rigs" / "demo.yaml").read_text()
    demo = demo.replace("../calibration/", str(Path(__file__).resolve().parent.parent / "calibration") + "/")
    rig.write_text(demo + f"\npriors:\n  clip: {{model: {spec}, weights: {tmp_path / 'tiny-clip.pt'}, layer: -1}}\n"
                          f"  dino: {{model: test_vit, weights: random}}\n  size: 64\n")
    return rig


def test_train_with_clipfusion_prompts_checkpoints_them(tmp_path):
    rig = _clip_file_rig(tmp_path)
    clips = _tiny_clips()
    run = training.TrainConfig(steps=2, batch=2, every=1, seed=3, probe_crops=8)
    losses = training.train(run, clips, tmp_path / "w.pt", tmp_path / "ck.pt", progress=False, clip_rig=rig)
    assert "clip" in losses and np.isfinite(losses["clip"]) and losses["clip"] > 0
    state = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert state["prompts"] is not None and "ctx" in state["prompts"]


@pytest.mark.parametrize("model", ["lite", "spg", "c3d"])
def test_clipfusion_refits_the_prompts_on_the_network_s_fused_images_every_k_steps(tmp_path, model, monkeypatch):
    from streamfuse.train.clipfusion import PromptTargets

    fits = []
    real_fit = PromptTargets.fit

    def recording_fit(self, ir, vis, fused_init=None, **kw):
        fits.append(None if fused_init is None else fused_init.clone())
        return real_fit(self, ir, vis, fused_init, **kw)

    monkeypatch.setattr(PromptTargets, "fit", recording_fit)
    rig = _clip_file_rig(tmp_path)
    run = training.TrainConfig(model=model, steps=5, batch=1, every=5, seed=3, crop=64 if model == "spg" else 160,
                               refit_every=2, probe_crops=8)
    losses = training.train(run, _tiny_clips(), tmp_path / "w.pt", tmp_path / "ck.pt", progress=False, clip_rig=rig)
    assert "clip" in losses and np.isfinite(losses["clip"])
    # The first fit has no fused images; a refit after steps 2 and 4 learns from the network's own.
    assert len(fits) == 3 and fits[0] is None
    assert all(f is not None and f.shape[1] == 1 and 0 <= float(f.min()) and float(f.max()) <= 1 for f in fits[1:])
    assert not torch.equal(fits[1], fits[2])  # the network changed between the refits


def test_shipped_lite_reaches_the_issue_targets_pooled_over_all_pairs():
    # Issue 7's bar, on every evaluation pair (~40 s): at least guided-filter fusion on Qabf and
    # VIF, at least SeAFusion on SCD (../shared/data/peers/README.md).
    from streamfuse.quality.evaluate import (
        POOLED,
        find_groups,
        mode_method,
        score_pairs,
        summarize,
    )

    groups = find_groups(data_path("pairs"))
    pairs = [p for ps in groups.values() for p in ps]
    assert len(pairs) == 121
    pooled = summarize(score_pairs(pairs, {"lite": mode_method("lite")}, sources=False))["lite"][POOLED]
    assert pooled["Qabf"] >= 0.643 and pooled["VIF"] >= 0.869 and pooled["SCD"] >= 1.620, pooled


def test_shipped_lite_flickers_less_than_its_more_flickering_source():
    from streamfuse.quality.evaluate import clip_flicker, find_groups, mode_method

    clips = find_groups(data_path("video", "m3svd_frames"))
    assert len(clips) == 4
    for name, frames in clips.items():
        result = clip_flicker(frames, {"lite": mode_method("lite", video=True)})
        assert result["lite"] < max(result["IR"], result["visible"]), (name, result)


def test_over_a_video_noise_settles_and_real_changes_pass_at_once():
    ir, vis = _frame()
    rng = np.random.default_rng(8)
    noisy = [np.clip(vis.astype(int) + rng.normal(0, 3, vis.shape).round().astype(int), 0, 255).astype(np.uint8)
             for _ in range(6)]
    video, stills = LiteFuser(FusionConfig(mode="lite")), LiteFuser(FusionConfig(mode="lite"))
    steady, apart = [], []
    luma = lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[..., 0].astype(float)  # noqa: E731
    for frame in noisy:  # the steadiness works on the fused luma (the chroma is the visible's)
        steady.append(luma(video.fuse(ir, frame)))
        stills.reset()
        apart.append(luma(stills.fuse(ir, frame)))
    change = lambda frames: np.mean([np.abs(b - a).mean() for a, b in zip(frames[2:], frames[3:])])  # noqa: E731
    assert change(steady) < 0.6 * change(apart)
    # A large change (a hot target appearing) is not held back.
    hot = ir.copy()
    hot[200:300, 250:350] = ir.max()
    fresh = luma(LiteFuser(FusionConfig(mode="lite")).fuse(hot, noisy[-1]))[220:280, 270:330]
    before = steady[-1][220:280, 270:330]
    first = luma(video.fuse(hot, noisy[-1]))[220:280, 270:330]
    assert np.abs(first - fresh).mean() < 0.5 * np.abs(before - fresh).mean()  # most of the way at once
    for _ in range(12):  # the maps follow half-way per frame, small differences settle at >= 20% a frame
        settled = luma(video.fuse(hot, noisy[-1]))[220:280, 270:330]
    assert np.abs(settled - fresh).mean() < 2.0
    video.reset()
    assert np.abs(luma(video.fuse(ir, noisy[0])) - apart[0]).max() == 0


def test_saliency_discounts_a_cameras_own_noise(monkeypatch):
    # A clean thermal edge against a dark visible image that is only noise: the estimate finds
    # the noise; without discounting it the noise wins every cell, with it the thermal camera
    # gets its edge back.
    rng = np.random.default_rng(9)
    a = np.full((160, 192), 0.3, np.float32)
    a[40:120, 60:130] = 0.8
    b = np.clip(0.08 + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    assert abs(lite.noise_sigma(b) - 0.05) < 0.006 and lite.noise_sigma(a) < 1e-3
    net = lite_torch.build_net().eval()
    ring = np.zeros(lite.low_size(a.shape), bool)
    ring[8:32, 13:35] = True
    ring[12:28, 17:31] = False   # the cells around the hot block's outline

    def ir_detail_share():
        prepared = lite.features_numpy(a, b)
        with torch.no_grad():
            maps = net(torch.from_numpy(prepared.features)[None])[0].numpy()
        return float(lite.probabilities_numpy(maps)[0][ring].mean())

    discounted = ir_detail_share()
    monkeypatch.setattr(lite, "NOISE_MARGIN", 0.0)
    assert ir_detail_share() < 0.01 and discounted > 0.15


def test_train_spg_writes_weights_the_spg_mode_loads(tmp_path):
    from streamfuse.fuse.spg import SPGFuser

    run = training.TrainConfig(model="spg", steps=2, batch=1, every=1, seed=4, lr=1e-3)
    losses = training.train(run, _tiny_clips(), tmp_path / "spg.pt", tmp_path / "spg-ck.pt", progress=False)
    assert losses and all(np.isfinite(v) for v in losses.values())
    ir, vis = _frame()
    out = SPGFuser(FusionConfig(mode="spg", weights=tmp_path / "spg.pt")).fuse(ir[:96, :128], vis[:96, :128])
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    with pytest.raises(UsageError, match="is a spg checkpoint, not lite"):
        training.train(training.TrainConfig(steps=3, batch=1), _tiny_clips(), tmp_path / "x.pt",
                       tmp_path / "spg-ck.pt", resume=True, progress=False)
