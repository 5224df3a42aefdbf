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


#: The smallest and the largest still image streamfuse takes: below 16 px a side there is no
#: scale left to fuse at; above 64 megapixels a pair no longer fits in memory comfortably.
MIN_SIDE = 16
MAX_PIXELS = 8192 * 8192


def read_raw(path: Path) -> np.ndarray:
    """The file's pixels as stored (8 or 16 bits, 1 or 3 channels). SourceError, in one line,
    if it cannot be read, is cut short (PNG, JPEG), or is smaller than MIN_SIDE or larger
    than MAX_PIXELS (judged from the header, before decoding)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise SourceError(f"{path}: {size[0]}x{size[1]} is larger than streamfuse takes "
                          f"({MAX_PIXELS // 1_000_000} megapixels); scale it down first")
    if truncated(data):
        raise SourceError(f"{path}: the file is cut short (an incomplete download or copy); use a whole file")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SourceError(f"{path}: cannot read it as an image (corrupt, or not PNG/JPG/TIFF)")
    if image.dtype not in (np.uint8, np.uint16):
        raise SourceError(f"{path}: {image.dtype} pixels; expected 8-bit, or 16-bit for IR")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:  # a format whose header was not read (TIFF, BMP)
        raise SourceError(f"{path}: {image.shape[1]}x{image.shape[0]} is larger than streamfuse takes "
                          f"({MAX_PIXELS // 1_000_000} megapixels); scale it down first")
    if min(image.shape[:2]) < MIN_SIDE:
        raise SourceError(f"{path}: {image.shape[1]}x{image.shape[0]} is too small; streamfuse needs at least "
                          f"{MIN_SIDE}x{MIN_SIDE}")
    return image


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header; None for other formats or no header found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):  # walk the JPEG segments to the frame header (SOF0..SOF15, not DHT/JPG/DAC)
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def truncated(data: bytes) -> bool:
    """Whether a PNG lacks its end chunk or a JPEG its end-of-image marker (other formats: False)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-12:]
    if data[:2] == b"\xff\xd8":
        return not data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    return False


def read_image(path: Path, role: str) -> np.ndarray:
    """An IR image as gray8/gray16, or a visible image as bgr24; SourceError if unreadable."""
    image = read_raw(path)
    if role == "ir":
        return to_pixel_format(image, "gray16" if image.dtype == np.uint16 else "gray8", str(path))
    return to_pixel_format(image, "bgr24", str(path))
