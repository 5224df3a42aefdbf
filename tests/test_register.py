"""Registration: the warp convention, bit depth, and calibration files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers import REPO
from streamfuse.capture.scene import DEMO_H_VIS_FROM_IR
from streamfuse.errors import RigError
from streamfuse.register import Registrar, load_calibration

IR_SIZE, VIS_SIZE = (640, 512), (640, 480)


def _dot(size, x, y, dtype=np.uint16, value=40000):
    """A small bright blob centred on (x, y), sub-pixel accurate through its symmetry."""
    img = np.zeros((size[1], size[0]), np.float64)
    cv2.circle(img, (round(x * 16), round(y * 16)), 5 * 16, 1.0, -1, lineType=cv2.LINE_AA, shift=4)
    return (cv2.GaussianBlur(img, (0, 0), 2) * value).astype(dtype)


def _centroid(img):
    m = cv2.moments(img.astype(np.float64))
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


@pytest.mark.parametrize("x_ir,y_ir", [(100.0, 80.0), (320.0, 256.0), (540.25, 430.75)])
def test_a_point_lands_where_the_homography_says(x_ir, y_ir):
    warped = Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE).warp(_dot(IR_SIZE, x_ir, y_ir))
    expected = cv2.perspectiveTransform(np.array([[[x_ir, y_ir]]]), DEMO_H_VIS_FROM_IR)[0, 0]
    assert np.hypot(*(np.array(_centroid(warped)) - expected)) < 0.25


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_warp_keeps_the_bit_depth(dtype):
    ir = np.full((512, 640), np.iinfo(dtype).max - 7, dtype)
    out = Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE).warp(ir)
    assert out.dtype == dtype and out.shape == (480, 640)
    assert out[240, 320] == np.iinfo(dtype).max - 7  # no squeeze to 8 bits, no rescaling


def test_identity_passes_the_frame_through_untouched():
    ir = (np.arange(640 * 480) % 65536).astype(np.uint16).reshape(480, 640)
    out = Registrar(np.eye(3), (640, 480), (640, 480)).warp(ir)
    assert out is ir


def test_pixels_the_ir_camera_does_not_see_are_zero():
    ir = np.full((512, 640), 30000, np.uint16)
    H = np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]])  # IR covers the top-left quarter only
    out = Registrar(H, IR_SIZE, VIS_SIZE).warp(ir)
    assert out[100, 100] == 30000 and out[400, 600] == 0


def test_wrong_ir_size_is_refused():
    with pytest.raises(ValueError, match="640x480"):
        Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE).warp(np.zeros((480, 640), np.uint16))


def test_shipped_calibrations_load():
    for path in sorted((REPO / "calibration").glob("*.yaml")):
        cal = load_calibration(path)
        assert cal.H_vis_from_ir.shape == (3, 3)
    demo = load_calibration(REPO / "calibration/demo.yaml")
    np.testing.assert_allclose(demo.H_vis_from_ir, DEMO_H_VIS_FROM_IR, atol=1e-9)


@pytest.mark.parametrize("text,message", [
    ("H_vis_from_ir: [[1,0,0],[0,1,0]]\nir_size: [4,4]\nvis_size: [4,4]\n", "3x3"),
    ("H_vis_from_ir: [[0,0,0],[0,0,0],[0,0,1]]\nir_size: [4,4]\nvis_size: [4,4]\n", "singular"),
    ("H_vis_from_ir: [[1,0,0],[0,1,0],[0,0,1]]\nvis_size: [4,4]\n", "ir_size"),
    ("H_vis_from_ir: [[1,0,0],[0,1,0],[0,0,1]]\nir_size: [4,4]\nvis_size: [4,4]\nextra: 1\n", "extra"),
    ("H_vis_from_ir: [[1,0,0],[0,1,0],[0,0,1]\n", "YAML"),
])
def test_bad_calibration_files(tmp_path, text, message):
    path = tmp_path / "cal.yaml"
    path.write_text(text)
    with pytest.raises(RigError, match=message) as err:
        load_calibration(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
