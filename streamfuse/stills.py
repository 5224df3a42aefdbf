"""`streamfuse fuse`: still image pairs through the same registration and fusion as video."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.capture.replay import IMAGE_SUFFIXES, to_pixel_format
from streamfuse.errors import SourceError, UsageError
from streamfuse.fuse import FusionConfig, make_fuser
from streamfuse.register import Registrar, load_calibration


def fuse_stills(ir: Path, vis: Path, output: Path, *, mode: str, palette: str,
                calibration: Path | None = None) -> int:
    """Fuse one pair of files, or every same-named pair of two folders; returns the count."""
    try:
        fuser = make_fuser(FusionConfig(mode=mode, palette=palette))
    except ValueError as exc:
        raise UsageError(f"--{str(exc).split(':', 1)[0]}: {str(exc).split(':', 1)[-1].strip()}") from None
    cal = load_calibration(calibration) if calibration else None
    pairs = _pairs(ir, vis, output)
    for ir_path, vis_path, out_path in pairs:
        ir_img = read_image(ir_path, "ir")
        vis_img = read_image(vis_path, "vis")
        ir_img = _register(ir_img, vis_img, cal, ir_path, vis_path)
        fuser.reset()  # unrelated images: no video state from the last pair
        fused = fuser.fuse(ir_img, vis_img)
        if not cv2.imwrite(str(out_path), fused):
            raise UsageError(f"{out_path}: cannot write the image; check the folder and the suffix (.png, .jpg)")
    return len(pairs)


def _pairs(ir: Path, vis: Path, output: Path) -> list[tuple[Path, Path, Path]]:
    pairs = match_pairs(ir, vis)
    if not ir.is_dir():
        if not output.parent.is_dir():
            raise UsageError(f"{output}: folder {output.parent} does not exist")
        return [(ir, vis, output)]
    output.mkdir(parents=True, exist_ok=True)
    return [(a, b, output / f"{a.stem}.png") for a, b in pairs]


def match_pairs(ir: Path, vis: Path) -> list[tuple[Path, Path]]:
    """(IR file, visible file) of two image files, or of two folders matched by file name
    without suffix; UsageError if they do not pair up."""
    for path in (ir, vis):
        if not path.exists():
            raise UsageError(f"{path} does not exist")
    if ir.is_dir() != vis.is_dir():
        raise UsageError(f"give two images or two folders, not {ir} and {vis}")
    if not ir.is_dir():
        return [(ir, vis)]
    vis_by_stem = {p.stem: p for p in vis.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    ir_files = sorted(p for p in ir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    unmatched = [p.name for p in ir_files if p.stem not in vis_by_stem]
    if not ir_files:
        raise UsageError(f"{ir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if unmatched:
        raise UsageError(f"{vis}: no visible image named like {unmatched[0]} ({len(unmatched)} IR images "
                         "unmatched); pairs are matched by file name without suffix")
    return [(p, vis_by_stem[p.stem]) for p in ir_files]


def read_image(path: Path, role: str) -> np.ndarray:
    """An IR image as gray8/gray16, or a visible image as bgr24; SourceError if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SourceError(f"{path}: cannot read it as an image (corrupt, or not PNG/JPG/TIFF)")
    if image.dtype not in (np.uint8, np.uint16):
        raise SourceError(f"{path}: {image.dtype} pixels; expected 8-bit, or 16-bit for IR")
    if role == "ir":
        return to_pixel_format(image, "gray16" if image.dtype == np.uint16 else "gray8", str(path))
    return to_pixel_format(image, "bgr24", str(path))


def _register(ir: np.ndarray, vis: np.ndarray, cal, ir_path: Path, vis_path: Path) -> np.ndarray:
    ir_size, vis_size = (ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0])
    if cal is None:
        if ir_size != vis_size:
            raise UsageError(f"{ir_path} is {ir_size[0]}x{ir_size[1]} but {vis_path} is {vis_size[0]}x{vis_size[1]}; "
                             "give --calibration for unaligned pairs")
        return ir
    if ir_size != cal.ir_size or vis_size != cal.vis_size:
        raise UsageError(f"{ir_path} ({ir_size[0]}x{ir_size[1]}) and {vis_path} ({vis_size[0]}x{vis_size[1]}) "
                         f"do not match the calibration's sizes {cal.ir_size} and {cal.vis_size}")
    return Registrar.from_calibration(cal).warp(ir)
