"""Still images: reading IR and visible image files, and pairing two folders of them by name.

Shared by `streamfuse fuse` (the CLI) and `streamfuse eval` (quality/), so a pair is read
the same way wherever it is fused.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.capture.replay import IMAGE_SUFFIXES, to_pixel_format
from streamfuse.errors import SourceError, UsageError


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


def read_raw(path: Path) -> np.ndarray:
    """The file's pixels as stored (8 or 16 bits, 1 or 3 channels); SourceError if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SourceError(f"{path}: cannot read it as an image (corrupt, or not PNG/JPG/TIFF)")
    if image.dtype not in (np.uint8, np.uint16):
        raise SourceError(f"{path}: {image.dtype} pixels; expected 8-bit, or 16-bit for IR")
    return image


def read_image(path: Path, role: str) -> np.ndarray:
    """An IR image as gray8/gray16, or a visible image as bgr24; SourceError if unreadable."""
    image = read_raw(path)
    if role == "ir":
        return to_pixel_format(image, "gray16" if image.dtype == np.uint16 else "gray8", str(path))
    return to_pixel_format(image, "bgr24", str(path))
