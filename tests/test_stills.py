"""`streamfuse fuse` on still pairs: 8-bit and 16-bit IR, single files and folders."""
from __future__ import annotations

import cv2
import numpy as np
from helpers import data_path, streamfuse


def test_fuse_one_msrs_pair(tmp_path):
    pairs = data_path("pairs", "msrs")
    name = sorted(p.name for p in (pairs / "ir").iterdir())[0]
    out = tmp_path / "fused.png"
    result = streamfuse("fuse", pairs / "ir" / name, pairs / "vis" / name, "-o", out, "--mode", "msx")
    assert result.returncode == 0, result.stderr
    fused, vis = cv2.imread(str(out)), cv2.imread(str(pairs / "vis" / name))
    assert fused.shape == vis.shape
    assert not np.array_equal(fused, vis)


def test_fuse_16bit_tiff_ir(tmp_path):
    ir = np.full((48, 64), 28000, np.uint16)
    ir[10:30, 20:40] = 33000  # a hot square
    cv2.imwrite(str(tmp_path / "ir.tiff"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), np.full((48, 64, 3), 40, np.uint8))
    result = streamfuse("fuse", tmp_path / "ir.tiff", tmp_path / "vis.png", "-o", tmp_path / "f.png",
                        "--mode", "alpha", "--palette", "white-hot")
    assert result.returncode == 0, result.stderr
    fused = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_GRAYSCALE).astype(int)
    assert fused[15:25, 25:35].mean() > fused[40:, :15].mean() + 50


def test_fuse_two_folders_matched_by_name(tmp_path):
    for sub in ("ir", "vis"):
        (tmp_path / sub).mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / "ir" / f"{name}.png"), np.full((32, 32), 200, np.uint8))
        cv2.imwrite(str(tmp_path / "vis" / f"{name}.jpg"), np.full((32, 32, 3), 50, np.uint8))
    result = streamfuse("fuse", tmp_path / "ir", tmp_path / "vis", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]


def test_fuse_errors_are_one_line_with_exit_2(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    cv2.imwrite(str(tmp_path / "ir" / "x.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((24, 24), np.uint8))
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "strip.png"), np.zeros((1, 5000), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "notimage.png").write_bytes(b"hello, not an image at all")
    rng = np.random.default_rng(0)
    for suffix in (".png", ".jpg"):
        ok, data = cv2.imencode(suffix, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        (tmp_path / f"cut{suffix}").write_bytes(data.tobytes()[: len(data) // 2])
    ok, data = cv2.imencode(".png", np.zeros((32, 32), np.uint8))
    huge = bytearray(data.tobytes())
    huge[16:24] = (10_000).to_bytes(4, "big") * 2  # a header claiming 10000x10000
    (tmp_path / "huge.png").write_bytes(bytes(huge))
    pair = (tmp_path / "big.png", tmp_path / "small.png")
    cases = [
        (("fuse", tmp_path / "ir", tmp_path / "vis", "-o", tmp_path / "o"), "no visible image named like x.png"),
        (("fuse", tmp_path / "missing.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "does not exist"),
        (("fuse", *pair, "-o", tmp_path / "o.png"), "--calibration"),
        (("fuse", tmp_path / "broken.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "cannot read"),
        (("fuse", tmp_path / "notimage.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "cannot read"),
        (("fuse", tmp_path / "cut.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "cut short"),
        (("fuse", tmp_path / "big.png", tmp_path / "cut.jpg", "-o", tmp_path / "o.png"), "cut short"),
        (("fuse", tmp_path / "tiny.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "at least 16x16"),
        (("fuse", tmp_path / "strip.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "at least 16x16"),
        (("fuse", tmp_path / "huge.png", tmp_path / "small.png", "-o", tmp_path / "o.png"), "10000x10000 is larger"),
        (("fuse", *pair, "-o", tmp_path / "o.xyz"), "unknown image type .xyz"),
        (("fuse", *pair, "-o", tmp_path / "o.png", "--mode", "nope"), "mode"),
    ]
    for args, message in cases:
        result = streamfuse(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
