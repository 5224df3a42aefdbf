"""spg learns from its priors: the mask-prior experiment, `streamfuse train --model spg --priors RIG`
with a tiny random CLIP/DINO (computed once per frame, cached, cropped in step), and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import REPO, streamfuse
from test_priors import tiny_clip_file

torch = pytest.importorskip("torch", reason="training spg needs the `learn` extra (torch)")

from streamfuse.bench import spg_mask  # noqa: E402
from streamfuse.fuse import FusionConfig, make_fuser  # noqa: E402
from streamfuse.models import spg  # noqa: E402
from streamfuse.models.spg import SPGFusionNet  # noqa: E402
from streamfuse.train.data import Pick, synthetic_clips  # noqa: E402
from streamfuse.train.priors import crop_map  # noqa: E402


def _small_net():
    """spg's structure, narrower: the experiment's claim is about the modulation path, not the width."""
    return SPGFusionNet(widths=(8, 16, 32, 32), hidden=16)


def test_the_mask_prior_raises_masked_target_contrast_only_when_trained_with_it():
    with_mask, without = spg_mask.train_pair(60, scenes=4, batch=4, lr=2e-3, crop=96, net_factory=_small_net)
    frames = spg_mask.eval_frames()
    trained, untrained = spg_mask.score(with_mask, frames), spg_mask.score(without, frames)
    # Trained with the mask: the prior lifts the targets' thermal contrast well above the same
    # network's no-prior output, and leaves the rest of the picture alone.
    assert trained.gain > 0.15, trained
    assert trained.outside_change < 1.0, trained
    # Trained without priors: the mask does nothing for the targets.
    assert abs(untrained.gain) < 0.05 and trained.gain > untrained.gain + 0.1, (trained, untrained)


def test_crop_map_resamples_the_frame_grid_onto_the_crop_and_mirrors_it():
    # A 1-channel map whose value is the x (in pixels) of each 16 px cell's centre, over 320 x 160.
    gh, gw = 10, 20
    ramp = np.broadcast_to((np.arange(gw, dtype=np.float32) + 0.5) * 16, (1, gh, gw)).copy()
    out = crop_map(ramp, Pick(clip=0, t=0, y=32, x=64, flip=False, size=64), (160, 320))
    assert out.shape == (1, 4, 4)
    assert np.allclose(out[0, 0].numpy(), 64 + 8 + 16 * np.arange(4), atol=1e-4)  # the crop's own cell centres
    flipped = crop_map(ramp, Pick(clip=0, t=0, y=32, x=64, flip=True, size=64), (160, 320))
    assert np.allclose(flipped[0].numpy(), out[0].numpy()[:, ::-1])


@pytest.fixture(scope="module")
def prior_rig(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rig")
    rig = yaml.safe_load((REPO / "rigs" / "demo.yaml").read_text())
    rig["calibration"] = str(REPO / "calibration" / "demo.yaml")
    rig["priors"] = {"clip": {"model": str(tiny_clip_file(folder)), "weights": "random", "layer": -2},
                     "dino": {"model": "test_vit", "weights": "random"}, "size": 64}
    (folder / "rig.yaml").write_text(yaml.safe_dump(rig))
    return folder / "rig.yaml"


def _train(tmp_path, rig, *extra):
    return streamfuse("train", "--model", "spg", "--priors", rig, "--synthetic", 2, "--steps", 4, "--batch", 2,
                      "--crop", 64, "--lr", "3e-3", "--prior-cache", tmp_path / "cache", "--out", tmp_path / "spg.pt",
                      "--checkpoint", tmp_path / "ck.pt", "--quiet", *extra)


def test_train_spg_with_a_rig_s_priors_learns_the_modulation_and_the_output_follows_the_prior(tmp_path, prior_rig):
    done = _train(tmp_path, prior_rig)
    assert done.returncode == 0, done.stderr
    assert "priors: rig priors (clip=" in done.stdout
    saved = torch.load(tmp_path / "spg.pt", weights_only=False)
    assert saved["priors"].startswith("rig priors (clip=")
    # The semantic path was trained: every CSAF's semantic conv moved from its initial weights.
    torch.manual_seed(0)
    start = spg.build_net().state_dict()
    for level in range(len(spg.WIDTHS)):
        for name in ("shared.0.weight", "gamma.weight", "beta.weight"):
            key = f"csaf.{level}.{name}"
            assert saved["model"][key].abs().sum() > 0 and not torch.equal(saved["model"][key], start[key]), key
    # One cached prior per training frame (2 scenes x 5 frames that have a next one).
    cached = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 10
    # The trained network's picture changes with the prior it is given.
    from streamfuse.priors.extractor import build_extractor
    from streamfuse.rig import load_rig

    rig = load_rig(prior_rig)
    extractor = build_extractor(rig.priors, prior_rig)
    clip = synthetic_clips(2, seed=5)
    frames = [(np.round(c[0, 0] * 255).astype(np.uint8), np.round(c[0, 1:4].transpose(1, 2, 0) * 255).astype(np.uint8))
              for c in clip]
    priors = [extractor(ir, vis) for ir, vis in frames]
    fused = []
    ir, vis = frames[0][0][160:288, 240:400], frames[0][1][160:288, 240:400]  # a crop: spg is slow on a CPU
    for prior in (None, priors[0], priors[1]):
        fuser = make_fuser(FusionConfig(mode="spg", weights=tmp_path / "spg.pt"))
        fused.append([fuser.fuse(ir, vis, prior) for _ in range(9)][-1].astype(int))  # blended in fully
    assert np.abs(fused[1] - fused[0]).mean() > 0.05 and np.abs(fused[2] - fused[1]).mean() > 0.05

    # The same frames again read every prior back from the cache (the command's own frames:
    # --synthetic 2 with the default seed), and a damaged entry is computed again, not trusted.
    from streamfuse.train.data import synthetic_clips_with_masks
    from streamfuse.train.priors import RigPriors

    stamps = {p: p.stat().st_mtime_ns for p in cached}
    clips, _ = synthetic_clips_with_masks(2, seed=0)
    again = RigPriors(extractor, clips, tmp_path / "cache")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npz")} == stamps
    assert len(again.maps) == 2 and all(len(frames) == 5 for frames in again.maps)
    cached[0].write_bytes(b"not an npz")
    RigPriors(extractor, clips, tmp_path / "cache")
    with np.load(cached[0]) as data:
        assert data["ir"].shape[0] == spg.SEMANTIC_DIM
    assert all(p.stat().st_mtime_ns == stamps[p] for p in cached[1:])  # only the damaged one was redone


def test_train_priors_usage_errors(tmp_path, prior_rig):
    lite = streamfuse("train", "--model", "lite", "--priors", prior_rig, "--steps", 1)
    assert lite.returncode == 2 and "--priors works with --model spg" in lite.stderr
    none = streamfuse("train", "--model", "spg", "--priors", tmp_path / "nope.yaml", "--steps", 1)
    assert none.returncode == 2 and "nope.yaml: no such rig file" in none.stderr
    masks = streamfuse("train", "--model", "spg", "--priors", "mask", "--synthetic", 0, "--steps", 1,
                       "--clips", REPO / "nonexistent")
    assert masks.returncode == 2 and "train:" in masks.stderr and "Traceback" not in masks.stderr
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(prior_rig.read_text()).items() if k != "priors"}))
    no_section = streamfuse("train", "--model", "spg", "--priors", bare, "--synthetic", 1, "--steps", 1)
    assert no_section.returncode == 2 and "has no priors: section" in no_section.stderr
    crop = streamfuse("train", "--model", "spg", "--crop", 70, "--steps", 1)
    assert crop.returncode == 2 and "crop: expected a multiple of 16" in crop.stderr


def test_the_mask_prior_benchmark_prints_both_networks_with_numbers(capsys):
    import re

    from streamfuse.cli import main

    assert main(["bench-models", "--mask-prior", "2", "--crop", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("spg mask-prior experiment: 2 steps")
    number = r"(-?\d+\.\d+)"
    rows = [re.search(rf"masked contrast {number} with the mask, {number} without; gain ([+-]\d+\.\d+); "
                      rf"outside change {number} grey levels", line) for line in lines[1:]]
    assert len(rows) == 2 and all(rows)
    for row in rows:
        with_mask, without, gain = (float(row.group(i)) for i in (1, 2, 3))
        assert abs(gain - (with_mask - without)) < 2e-3
    assert main(["bench-models", "--mask-prior", "2", "--crop", "70"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
