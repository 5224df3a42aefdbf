"""Registration: the warp convention, bit depth, and calibration files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import REPO, streamfuse

from streamfuse.capture.scene import DEMO_H_VIS_FROM_IR, SyntheticScene
from streamfuse.errors import RigError
from streamfuse.register.calibration import Calibration, load_calibration
from streamfuse.register.geometry import ParallaxModel, apply_homography, corner_rms
from streamfuse.register.gpu import DeviceWarper
from streamfuse.register.registrar import (
    Registrar,
    RegistrationConfig,
    gpu_problem,
    resolve_backend,
    warp_ir_to_vis,
)

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


# --- Backends: the same tests on the CPU everywhere and on CUDA where cupy sees a GPU ----------

@pytest.fixture(params=["cpu", "cuda"])
def backend(request):
    """'cpu', or 'gpu' for the cuda run (skipped cleanly without cupy or a CUDA device)."""
    if request.param == "cuda":
        problem = gpu_problem()
        if problem:
            pytest.skip(f"no CUDA: {problem}")
        return "gpu"
    return "cpu"


def _scene_ir(bits=16, size=IR_SIZE):
    return SyntheticScene(seed=2, ir_size=size, ir_bits=bits).render_ir(0.5, 3)


@pytest.mark.parametrize("x_ir,y_ir", [(100.0, 80.0), (540.25, 430.75)])
def test_a_point_lands_where_the_homography_says_on_every_backend(backend, x_ir, y_ir):
    warped = Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE, backend=backend).warp(_dot(IR_SIZE, x_ir, y_ir))
    expected = apply_homography(DEMO_H_VIS_FROM_IR, np.array([[x_ir, y_ir]]))[0]
    assert np.hypot(*(np.array(_centroid(warped)) - expected)) < 0.25


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("vis_size", [VIS_SIZE, (1920, 1080)])
def test_every_backend_gives_opencvs_warp_within_one_grey_level(backend, bits, vis_size):
    H = np.diag([vis_size[0] / 640, vis_size[1] / 480, 1.0]) @ DEMO_H_VIS_FROM_IR
    ir = _scene_ir(bits)
    out = Registrar(H, IR_SIZE, vis_size, backend=backend).warp(ir)
    reference = warp_ir_to_vis(ir, H, vis_size)
    assert out.dtype == ir.dtype and out.shape == reference.shape
    # One 8-bit grey level, or its 16-bit equivalent (257 counts); OpenCV rounds its own float32
    # coordinates, so a handful of counts differ on sharp 16-bit edges.
    tolerance = 1 if bits == 8 else 16
    assert np.abs(out.astype(np.int64) - reference).max() <= tolerance


def test_the_device_arithmetic_matches_opencv_when_run_with_numpy():
    """The GPU code path with numpy as its array module: what CI checks of the CUDA warp."""
    rng = np.random.default_rng(0)
    for dtype, tolerance in ((np.uint8, 1), (np.uint16, 16)):
        ir = (rng.random((512, 640)) * np.iinfo(dtype).max).astype(dtype)   # worst case: noise
        for H, size in ((DEMO_H_VIS_FROM_IR, VIS_SIZE), (np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1.0]]), VIS_SIZE),
                        (np.array([[2.9, 0.05, -30], [0.01, 2.1, -50], [1e-5, 2e-5, 1]]), (1920, 1080))):
            out = DeviceWarper(np, IR_SIZE, size, H).warp(ir)
            assert np.abs(out.astype(np.int64) - warp_ir_to_vis(ir, H, size)).max() <= tolerance
    zero_outside = DeviceWarper(np, IR_SIZE, VIS_SIZE, np.diag([0.5, 0.5, 1.0])).warp(np.full((512, 640), 9, np.uint8))
    assert zero_outside[100, 100] == 9 and zero_outside[400, 600] == 0


def test_the_device_arithmetic_follows_a_dense_map_like_remap():
    ir = (np.random.default_rng(1).random((512, 640)) * 255).astype(np.uint8)
    xs, ys = np.meshgrid(np.arange(640, dtype=np.float32), np.arange(480, dtype=np.float32))
    ir_xy = np.stack([xs * 0.9 + 20.3 + 3 * np.sin(ys / 50), ys * 1.05 - 7.6], -1).astype(np.float32)
    ir_xy[:10] = np.nan   # behind the camera: nothing seen
    out = DeviceWarper(np, IR_SIZE, VIS_SIZE, ir_xy=ir_xy).warp(ir)
    reference = cv2.remap(ir, np.nan_to_num(ir_xy, nan=-9), None, cv2.INTER_LINEAR, borderValue=0)
    assert np.abs(out.astype(int) - reference).max() <= 1 and not out[:10].any()


def test_identity_passes_through_on_every_backend(backend):
    ir = (np.arange(640 * 480) % 65536).astype(np.uint16).reshape(480, 640)
    out = Registrar(np.eye(3), (640, 480), (640, 480), backend=backend).warp(ir)
    np.testing.assert_array_equal(out, ir)


def test_warp_reaches_torch_without_a_copy(backend):
    torch = pytest.importorskip("torch")
    registrar = Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE, backend=backend)
    ir = _scene_ir(16)
    tensor = registrar.warp_torch(ir)
    assert tensor.dtype == torch.uint16 and tuple(tensor.shape) == (480, 640)
    assert tensor.device.type == ("cuda" if backend == "gpu" else "cpu")
    np.testing.assert_array_equal(tensor.cpu().numpy(), registrar.warp(ir))
    if backend == "cpu":   # the tensor is a view of the warped frame's memory
        image = registrar.warp(ir)
        assert torch.from_dlpack(image).data_ptr() == image.ctypes.data


def test_backend_choice():
    problem = gpu_problem()
    assert resolve_backend("cpu") == "cpu"
    assert resolve_backend("auto") == ("gpu" if problem is None else "cpu")
    if problem is None:
        assert resolve_backend("gpu") == "gpu"
    else:
        with pytest.raises(RigError, match="registration.backend: gpu") as err:
            resolve_backend("gpu")
        assert "\n" not in str(err.value) and "streamfuse[gpu]" in str(err.value)


def test_a_rig_asking_for_the_gpu_without_one_fails_at_start_up(tmp_path):
    if gpu_problem() is None:
        pytest.skip("this machine has a GPU")
    rig = (REPO / "rigs/demo.yaml").read_text().replace("calibration: ../calibration/demo.yaml",
                                                        f"calibration: {REPO / 'calibration/demo.yaml'}\n"
                                                        "registration: {backend: gpu}")
    (tmp_path / "gpu.yaml").write_text(rig)
    result = streamfuse("run", tmp_path / "gpu.yaml", "--frames", "5", "--quiet")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "registration.backend: gpu" in result.stderr


# --- Working distance and live corrections ----------------------------------------------------

K_IR = np.array([[686.2, 0, 319.5], [0, 686.2, 255.5], [0, 0, 1]])
K_VIS = np.array([[453.2, 0, 319.5], [0, 453.2, 239.5], [0, 0, 1]])
MODEL = ParallaxModel(K_IR, K_VIS, np.eye(3), np.array([0.05, 0.0, 0.0]), distance_m=10.0)


def test_set_distance_moves_the_mapping_as_the_model_says():
    measured = np.array([[1, 0, 2.5], [0, 1, -1.5], [0, 0, 1]]) @ MODEL.H_vis_from_ir(10.0)  # a small correction
    registrar = Registrar(measured, IR_SIZE, VIS_SIZE, parallax=MODEL)
    assert registrar.distance_m == 10.0
    np.testing.assert_allclose(registrar.H_vis_from_ir, measured / measured[2, 2])
    registrar.set_distance(2.0)
    # The calibrated correction stays; the model's shift from 10 m to 2 m is added: f * b * (1/2 - 1/10) px.
    shift = apply_homography(registrar.H_vis_from_ir, [[320, 256]]) - apply_homography(measured, [[320, 256]])
    np.testing.assert_allclose(shift[0], [453.2 * 0.05 * (1 / 2 - 1 / 10), 0], atol=1e-6)
    ir = _dot(IR_SIZE, 320, 256)
    expected = apply_homography(registrar.H_vis_from_ir, [[320, 256]])[0]
    assert np.hypot(*(np.array(_centroid(registrar.warp(ir))) - expected)) < 0.25


def test_distance_needs_a_parallax_model():
    registrar = Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE)
    assert registrar.distance_m is None
    with pytest.raises(ValueError, match="no parallax model"):
        registrar.set_distance(3.0)
    with pytest.raises(ValueError, match="> 0"):
        Registrar(DEMO_H_VIS_FROM_IR, IR_SIZE, VIS_SIZE, parallax=MODEL).set_distance(0)


def test_refine_to_keeps_later_distance_changes_and_refuses_a_stale_base():
    registrar = Registrar(MODEL.H_vis_from_ir(10.0), IR_SIZE, VIS_SIZE, parallax=MODEL)
    before = registrar.H_vis_from_ir
    drifted = np.array([[1, 0, 3.0], [0, 1, 1.0], [0, 0, 1]]) @ before
    assert registrar.refine_to(drifted, before)
    assert corner_rms(registrar.H_vis_from_ir, drifted, IR_SIZE) < 1e-9
    registrar.set_distance(5.0)   # the correction survives a distance change
    expected = np.array([[1, 0, 3.0], [0, 1, 1.0], [0, 0, 1]]) @ MODEL.H_vis_from_ir(5.0)
    assert corner_rms(registrar.H_vis_from_ir, expected, IR_SIZE) < 1e-6
    assert not registrar.refine_to(before, drifted)   # estimated on a mapping no longer in effect


def test_registration_config_checks_its_values():
    assert RegistrationConfig(distance="far").distance_m == 50.0
    assert RegistrationConfig(distance=12.5).distance_m == 12.5
    for bad, message in (({"distance": "close"}, "distance"), ({"distance": -1.0}, "distance"),
                         ({"refine_min_confidence": 2.0}, "refine_min_confidence")):
        with pytest.raises(ValueError, match=message):
            RegistrationConfig(**bad)


# --- Calibration files with a parallax model ---------------------------------------------------

PARALLAX_FILE = """\
ir_size: [640, 512]
vis_size: [640, 480]
parallax:
  K_ir: [[686.2, 0, 319.5], [0, 686.2, 255.5], [0, 0, 1]]
  K_vis: [[453.2, 0, 319.5], [0, 453.2, 239.5], [0, 0, 1]]
  R_vis_from_ir: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
  t_vis_from_ir: [0.05, 0, 0]
  distance_m: mid
"""


def test_a_parallax_only_calibration_gives_the_mapping_at_its_distance(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text(PARALLAX_FILE)
    cal = load_calibration(path)
    assert cal.parallax.distance_m == 10.0
    np.testing.assert_allclose(cal.H_vis_from_ir, MODEL.H_vis_from_ir(10.0))
    registrar = Registrar.from_calibration(cal, RegistrationConfig(backend="cpu", distance="near"))
    assert registrar.distance_m == 3.0
    np.testing.assert_allclose(registrar.H_vis_from_ir, MODEL.H_vis_from_ir(3.0), atol=1e-9)


def test_lens_distortion_is_warped_through_a_dense_map(tmp_path, backend):
    path = tmp_path / "cal.yaml"
    path.write_text(PARALLAX_FILE + "  dist_ir: [-0.3, 0.1, 0, 0, 0]\n")
    registrar = Registrar.from_calibration(load_calibration(path), RegistrationConfig(backend=backend))
    # An IR dot at its distorted pixel lands at the visible pixel of the same ray.
    x_u = np.array([0.25, 0.2])    # an undistorted normalised IR ray (on the 10 m plane)
    r2 = x_u @ x_u
    x_d = x_u * (1 - 0.3 * r2 + 0.1 * r2 * r2)
    ir_px = K_IR[:2, :2] @ x_d + K_IR[:2, 2]
    vis_px = apply_homography(MODEL.H_vis_from_ir(10.0), (K_IR[:2, :2] @ x_u + K_IR[:2, 2])[None])[0]
    centre = _centroid(registrar.warp(_dot(IR_SIZE, *ir_px)))
    assert np.hypot(*(np.array(centre) - vis_px)) < 0.35


@pytest.mark.parametrize("extra,message", [
    ("H_vis_from_ir: [[1,0,0],[0,1,0],[0,0,1]]\n  dist_ir: [-0.3, 0.1, 0, 0, 0]\n", "distortion cannot be combined"),
    ("  K_ir: [[686.2, 0, 319.5], [0, -1, 255.5], [0, 0, 1]]\n", "parallax.K_ir"),
    ("  R_vis_from_ir: [[1, 0, 0], [0, 1, 0], [0, 0, -1]]\n", "rotation"),
    ("  baseline: 0.05\n", "parallax.baseline"),
    ("  distance_m: -2\n", "parallax.distance_m"),
    ("  t_vis_from_ir: [0.05, 0]\n", "parallax.t_vis_from_ir"),
])
def test_bad_parallax_sections(tmp_path, extra, message):
    text = PARALLAX_FILE
    if extra.startswith("H_vis"):
        text = extra.split("\n")[0] + "\n" + text + extra.split("\n", 1)[1]
    else:   # the key given again wins in YAML: replace the section's line
        key = extra.split(":")[0]
        lines = [line for line in text.splitlines() if not line.startswith(key + ":")]
        text = "\n".join(lines) + "\n" + extra
    path = tmp_path / "cal.yaml"
    path.write_text(text)
    with pytest.raises(RigError, match=message) as err:
        load_calibration(path)
    assert "\n" not in str(err.value)


def test_a_mirroring_calibration_is_refused(tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text("H_vis_from_ir: [[-1,0,639],[0,1,0],[0,0,1]]\nir_size: [640,512]\nvis_size: [640,480]\n")
    with pytest.raises(RigError, match="mirrors"):
        load_calibration(path)


def test_identity_calibration_has_no_parallax():
    cal = Calibration.identity((640, 480))
    assert cal.parallax is None and Registrar.from_calibration(cal).identity


def test_pick_takes_the_same_pixels_as_a_boolean_mask_in_the_same_order():
    from streamfuse.register.direct import pick

    rng = np.random.default_rng(3)
    mask = rng.random((37, 53)) > 0.4
    for image in (rng.random((37, 53)), rng.random((37, 53, 2)).astype(np.float32)):
        np.testing.assert_array_equal(pick(image, np.flatnonzero(mask)), image[mask])
