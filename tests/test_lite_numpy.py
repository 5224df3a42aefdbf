"""`lite` without torch: the base install runs, fuses and scores with it, and the modes that need
torch say so in one line. Each command runs in a fresh Python in which torch cannot be imported."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from streamfuse.fuse.lite import WEIGHTS
from streamfuse.fuse.weights import read_torch_file
from streamfuse.models import lite
from tests.helpers import REPO, data_path

#: Run streamfuse's CLI with `import torch` failing, then say whether torch got loaded anyway.
_NO_TORCH = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (refused by the test)", name=name)
sys.meta_path.insert(0, Refuse())
from streamfuse.cli import main
code = main(sys.argv[1:])
print("torch loaded" if "torch" in sys.modules else "torch not loaded")
sys.exit(code)
"""


def _without_torch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_run_fuse_and_eval_with_lite_need_no_torch(tmp_path):
    pairs = data_path("pairs", "msrs")
    name = min(p.name for p in (pairs / "ir").iterdir())
    commands = [
        ("run", REPO / "rigs" / "demo.yaml", "--frames", "20", "--record", tmp_path / "out.mp4", "--quiet"),
        ("fuse", pairs / "ir" / name, pairs / "vis" / name, "-o", tmp_path / "fused.png", "--mode", "lite"),
        ("eval", tmp_path / "set", "--modes", "lite", "-o", tmp_path / "eval", "--montage", "0"),
    ]
    for role in ("ir", "vis"):  # a one-pair set for eval
        (tmp_path / "set" / role).mkdir(parents=True)
        (tmp_path / "set" / role / name).write_bytes((pairs / role / name).read_bytes())
    for command in commands:
        proc = _without_torch(*command)
        assert proc.returncode == 0, (command[0], proc.stderr[-2000:])
        assert "torch not loaded" in proc.stdout, command[0]
    assert cv2.imread(str(tmp_path / "fused.png")).shape[:2] == cv2.imread(str(pairs / "vis" / name)).shape[:2]


@pytest.mark.parametrize("command", [("train", "--steps", "1", "--quiet"),
                                     ("bench-models", "--device", "cuda")])
def test_a_mode_that_needs_torch_says_which_extra_in_one_line(command):
    proc = _without_torch(*command)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.count("\n") == 0, proc.stderr
    assert "needs torch" in err and "pip install -e '.[learn]'" in err and "Traceback" not in err


def test_the_weights_file_reads_without_torch():
    state = read_torch_file(WEIGHTS)
    assert state["steps"] > 0 and state["config"]["model"] == "lite"
    assert {k: v.shape for k, v in state["model"].items()} == lite.PARAM_SHAPES


def test_the_numpy_network_pools_and_convolves_like_torch_layers():
    # Reference values by hand: a 3x3 convolution with a centre tap is the identity plus the
    # bias, zero padding around; an odd last row is pooled alone (torch's ceil_mode).
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    pooled = lite._pool2(x)
    assert pooled.shape == (2, 3, 2)
    assert pooled[0, 0, 0] == x[0, :2, :2].mean() and pooled[0, 2, 1] == x[0, 4, 2]
    w = np.zeros((2, 2, 3, 3), np.float32)
    w[0, 0, 1, 1], w[1, 1, 0, 0] = 1.0, 1.0
    out = lite._conv3x3(x, w, np.array([0.5, 0.0], np.float32), 2)
    assert np.array_equal(out[0], x[0] + 0.5)
    assert np.array_equal(out[1][2:, 2:], x[1][:-2, :-2]) and not out[1][:2].any() and not out[1][:, :2].any()
    # A dilation beyond the map (small frames): the off-centre taps see only padding.
    wide = lite._conv3x3(x, w, np.array([0.5, 0.0], np.float32), 6)
    assert np.array_equal(wide[0], x[0] + 0.5) and not wide[1].any()


def test_the_edge_of_the_ir_field_of_view_leaves_no_edge():
    from streamfuse.capture.scene import SyntheticScene
    from streamfuse.fuse import FusionConfig, make_fuser

    scene = SyntheticScene(seed=3, night=True)
    ir = cv2.warpPerspective(scene.render_ir(1.0, 0), scene.H_vis_from_ir, scene.vis_size)
    vis = scene.render_vis(1.0, 0)
    outside = (ir == 0).astype(np.uint8)
    assert 0.02 < outside.mean() < 0.2
    k = np.ones((7, 7), np.uint8)
    band = (cv2.dilate(outside, k) & (1 - cv2.erode(outside, k))).astype(bool)  # around the border

    def edges(image):
        y = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float32)
        return cv2.magnitude(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))[band].mean()

    # Along the border the fused image is about as edgy as the visible one; pyramid fusion, which
    # keeps the border as an edge, shows how large the edge would be.
    lite_edges = edges(make_fuser(FusionConfig(mode="lite")).fuse(ir, vis))
    pyramid_edges = edges(make_fuser(FusionConfig(mode="pyramid")).fuse(ir, vis))
    assert lite_edges < 1.6 * edges(vis) and pyramid_edges > 3 * edges(vis)


def test_warm_targets_survive_a_degraded_thermal_image():
    # DRMF's degraded MSRS training IR (low contrast, blur, stripes, noise; tuning data, not
    # evaluation data): the targets of the clean IR keep most of their contrast.
    from streamfuse.fuse import FusionConfig, make_fuser
    from streamfuse.quality import targets
    from streamfuse.quality.measures import to_gray

    root = data_path("train", "msrs_drmf")
    fuser = make_fuser(FusionConfig(mode="lite"))
    clean, degraded = [], []
    for path in sorted((root / "ir").glob("*.png")):
        ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        poor = cv2.imread(str(root / "ir_degraded" / path.name), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(root / "vis" / path.name))
        fuser.reset()
        clean.append(targets.contrast_pairs(ir, to_gray(fuser.fuse(ir, vis))))
        fuser.reset()
        degraded.append(targets.contrast_pairs(ir, to_gray(fuser.fuse(poor, vis))))
    assert targets.retention(clean) > 0.95 and targets.retention(degraded) > 0.4
