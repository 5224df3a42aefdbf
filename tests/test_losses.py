"""The differentiable measures used for training agree with the toolbox-exact ones."""
import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamfuse.quality.measures import SourcePair, to_gray  # noqa: E402
from streamfuse.train import losses as L  # noqa: E402
from tests.helpers import data_path  # noqa: E402


def _tensor(image: np.ndarray):
    return torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]


@pytest.mark.parametrize("name", ["00001D", "00010N"])
def test_vif_qabf_scd_match_the_toolbox_measures_on_real_pairs(name):
    folder = data_path("train", "msrs_drmf")
    ir = cv2.imread(str(next((folder / "ir").glob(f"{name}.*"))), cv2.IMREAD_GRAYSCALE)
    vis = to_gray(cv2.imread(str(next((folder / "vis").glob(f"{name}.*")))))
    fusions = {"mean": ((ir.astype(int) + vis) // 2).astype(np.uint8),
               "max": np.maximum(ir, vis),
               "blurred ir": cv2.GaussianBlur(ir, (0, 0), 2.0)}
    a, b = _tensor(ir), _tensor(vis)
    for label, fused in fusions.items():
        exact = SourcePair(ir, vis).score(fused, ["VIF", "Qabf", "SCD"])
        f = _tensor(fused)
        assert float(L.vif(a, f) + L.vif(b, f)) == pytest.approx(exact["VIF"], abs=1e-3), label
        assert float(L.qabf(a, b, f)) == pytest.approx(exact["Qabf"], abs=1e-3), label
        assert float(2.0 - L.scd(f, a, b)) == pytest.approx(exact["SCD"], abs=1e-4), label


def test_the_measures_pass_gradients_to_the_fused_image():
    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(cv2.GaussianBlur(rng.random((64, 64), dtype=np.float32), (0, 0), s))[None, None]
            for s in (1.0, 2.0))
    f = (0.5 * a + 0.5 * b).requires_grad_(True)
    (L.vif(a, f) + L.vif(b, f) + L.qabf(a, b, f) - L.scd(f, a, b)).sum().backward()
    assert torch.isfinite(f.grad).all() and float(f.grad.abs().sum()) > 0
