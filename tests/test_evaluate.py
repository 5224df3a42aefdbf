"""`streamfuse eval`: scoring folders of pairs and clips, its files, and its errors."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from helpers import data_path, streamfuse

from streamfuse.cli import main
from streamfuse.fuse import FusionConfig, make_fuser
from streamfuse.quality.evaluate import (
    IR_ONLY,
    POOLED,
    VIS_ONLY,
    find_groups,
    fuser_method,
    load_pair,
    mode_method,
    score_pairs,
    summarize,
)
from streamfuse.quality.measures import MEASURES, fusion_metrics

#: Two small sets: (set, names) with SeAFusion outputs published for each.
PICKED = {"msrs": ["00004N", "01566D"], "tno": ["09"]}


def _link_pairs(root, picked=PICKED):
    """root/<set>/{ir,vis}/NAME.* and root/fused/<set>/NAME.png linked to the shared data."""
    for group, names in picked.items():
        for name in names:
            for role in ("ir", "vis"):
                (source,) = data_path("pairs", group, role).glob(f"{name}.*")
                (root / "sets" / group / role).mkdir(parents=True, exist_ok=True)
                (root / "sets" / group / role / source.name).symlink_to(source)
            (root / "fused" / group).mkdir(parents=True, exist_ok=True)
            (root / "fused" / group / f"{name}.png").symlink_to(data_path("peers", "seafusion", group, f"{name}.png"))
    return root / "sets", root / "fused"


def test_cli_scores_modes_and_fused_folders_with_tables_and_files(tmp_path):
    sets, fused = _link_pairs(tmp_path)
    out = tmp_path / "out"
    result = streamfuse("eval", sets, "--modes", "pyramid", "--fused", f"seafusion={fused}", "-o", out,
                        "--montage", "2")
    assert result.returncode == 0, result.stderr
    assert "msrs (2 pairs)" in result.stdout and "tno (1 pair)" in result.stdout and "pooled (3 pairs)" in result.stdout
    for method in (IR_ONLY, VIS_ONLY, "pyramid", "gff", "max", "seafusion"):
        # once per set and pooled, in the standard and in the user-facing tables
        assert result.stdout.count(f"\n  {method} ") == 6, method
    assert "target contrast retention" in result.stdout
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 6 and set(rows[0]) == {"set", "name", "method", *MEASURES}
    user = json.loads((out / "summary.json").read_text())["user"]
    assert set(user["pyramid"][POOLED]) == {"TCR", "TCR day", "TCR degraded", "noise", "targets"}
    assert user["pyramid"]["msrs"]["targets"] > 0 and 0 < user["pyramid"]["msrs"]["TCR degraded"] < 2
    assert user["seafusion"][POOLED]["TCR degraded"] is None  # a folder of fused images cannot be degraded
    assert user[IR_ONLY][POOLED]["TCR"] == 1.0
    # The fused folder's means reproduce the published per-image values.
    published = json.loads(data_path("peers", "metrics.json").read_text())["seafusion"]
    means = json.loads((out / "summary.json").read_text())["means"]
    for measure in MEASURES:
        expected = np.mean([published[g]["per_image"][n][measure] for g, ns in PICKED.items() for n in ns])
        assert means["seafusion"][POOLED][measure] == pytest.approx(expected, rel=1e-6)
    assert means[IR_ONLY]["msrs"]["SCD"] is None  # a copied source has no SCD: n/a, not a number
    try:
        import matplotlib  # noqa: F401  (the figures extra: montage and bars)
    except ImportError:
        assert "no figures" in result.stderr and not list(out.glob("montage.*"))
        return
    montage = cv2.imread(str(out / "montage.png"))
    assert montage.shape[0] > montage.shape[1] / 3  # two pairs, each a row and a row of crops
    assert (out / "montage.pdf").read_bytes().startswith(b"%PDF")
    for measure in MEASURES:
        assert cv2.imread(str(out / "bars" / f"{measure}.png")) is not None


def test_python_api_scores_a_fuser_like_the_measures_do():
    groups = find_groups(data_path("pairs", "msrs"))
    pair = groups["msrs"][0]
    fuser = make_fuser(FusionConfig(mode="alpha"))
    scores = score_pairs([pair], {"alpha": fuser_method(fuser)})
    assert [s.method for s in scores] == [IR_ONLY, VIS_ONLY, "alpha"]
    loaded = load_pair(pair)
    assert scores[2].values == fusion_metrics(loaded.ir_grey, loaded.vis_grey, fuser.fuse(loaded.ir, loaded.vis))
    assert summarize(scores)["alpha"]["msrs"] == {"n": 1, **scores[2].values}


def test_colour_stored_ir_is_measured_on_matlab_grey_and_fused_on_opencv_grey():
    (pair,) = [p for p in find_groups(data_path("pairs", "llvip"))["llvip"] if p.name == "190001"]
    loaded = load_pair(pair)
    raw = cv2.imread(str(pair.ir))
    assert np.array_equal(loaded.ir, cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY))
    assert loaded.ir_grey.shape == loaded.ir.shape
    assert np.abs(loaded.ir_grey.astype(int) - loaded.ir).max() <= 1


def test_cli_reports_the_flicker_of_fused_clips(tmp_path):
    clip = tmp_path / "0115_1831"
    for role in ("ir", "vis"):
        (clip / role).mkdir(parents=True)
        for frame in sorted(data_path("video", "m3svd_frames", "0115_1831", role).glob("*.png"))[:4]:
            (clip / role / frame.name).symlink_to(frame)
    out = tmp_path / "out"
    assert main(["eval", "--video", str(clip), "--modes", "alpha", "-o", str(out)]) == 0
    results = json.loads((out / "flicker.json").read_text())["0115_1831"]
    assert list(results) == ["IR", "visible", "alpha", "gff", "max"]
    assert 0 < results["IR"] < results["visible"]
    assert 0 < results["alpha"] <= results["visible"]


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@pytest.fixture
def tiny_set(tmp_path):
    """tmp/set/{ir,vis}/a.png, 64x48."""
    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        _write(tmp_path / "set" / role / "a.png", rng.integers(0, 256, (48, 64), dtype=np.uint8))
    return tmp_path / "set"


def _fails(capsys, *args):
    assert main(["eval", *map(str, args)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_set, capsys):
    out = tmp_path / "out"
    assert _fails(capsys) == "streamfuse: error: eval: give folders of pairs, or --video CLIP"
    assert "no such folder" in _fails(capsys, tmp_path / "nothing", "-o", out)
    (tmp_path / "empty").mkdir()
    assert "expected ir/ and vis/ folders" in _fails(capsys, tmp_path / "empty", "-o", out)
    _write(tiny_set / "ir" / "b.png", np.zeros((48, 64), np.uint8))
    assert "ir/b.png has no partner" in _fails(capsys, tiny_set, "-o", out)
    _write(tiny_set / "vis" / "b.png", np.zeros((40, 64), np.uint8))
    assert "is 64x48 but" in _fails(capsys, tiny_set, "-o", out)
    (tiny_set / "vis" / "b.png").write_bytes(b"not an image")
    assert "vis/b.png: cannot read it as an image" in _fails(capsys, tiny_set, "-o", out)
    for role in ("ir", "vis"):
        (tiny_set / role / "b.png").unlink()
        (tiny_set / role / "a.png").unlink()
    assert "no images" in _fails(capsys, tiny_set, "-o", out)


def test_bad_options_are_one_line_and_exit_2(tmp_path, tiny_set, capsys):
    out = tmp_path / "out"
    assert "--modes: expected one of" in _fails(capsys, tiny_set, "--modes", "pyramid,nope", "-o", out)
    assert "--palette" in _fails(capsys, tiny_set, "--palette", "rainbow", "-o", out)
    assert "--fused" in _fails(capsys, tiny_set, "--fused", tmp_path / "missing", "-o", out)
    (tmp_path / "fused").mkdir()
    assert "no image" in _fails(capsys, tiny_set, "--fused", tmp_path / "fused", "-o", out)
    _write(tmp_path / "fused" / "a.png", np.zeros((10, 10), np.uint8))
    assert "is 10x10 but its pair is 64x48" in _fails(capsys, tiny_set, "--fused", tmp_path / "fused", "-o", out)
    assert "flicker needs at least 2" in _fails(capsys, "--video", tiny_set, "-o", out)
    with pytest.raises(ValueError, match="mode"):
        mode_method("nope")
