"""`streamfuse fuse`: still image pairs through the same registration and fusion as video."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.capture.images import match_pairs, read_image
from streamfuse.capture.replay import IMAGE_SUFFIXES
from streamfuse.errors import UsageError
from streamfuse.fuse import MODES, FusionConfig, make_fuser
from streamfuse.register.calibration import load_calibration
from streamfuse.register.registrar import Registrar


def add_parser(sub) -> None:
    from streamfuse.fuse.palettes import PALETTES

    f = sub.add_parser("fuse", help="fuse still images: one IR/visible pair, or two folders of pairs",
                       description="Fuse IR and visible stills. IR may be 8-bit (PNG/JPG) or 16-bit "
                                   "(PNG/TIFF). With two folders, pairs are matched by file name.")
    f.add_argument("ir", type=Path, help="IR image or folder")
    f.add_argument("vis", type=Path, help="visible image or folder")
    f.add_argument("-o", "--output", type=Path, required=True, help="output image, or folder for folders")
    default_mode = FusionConfig().mode  # the one default, FusionConfig's
    f.add_argument("--mode", default=default_mode, help=f"fusion mode ({', '.join(MODES)}); default {default_mode}")
    f.add_argument("--palette", default="ironbow", help=f"IR palette ({', '.join(PALETTES)}); default ironbow")
    f.add_argument("--calibration", type=Path, help="calibration file when the images are not aligned")
    f.add_argument("--weights", type=Path, help="weights file of a learned mode (spg: `streamfuse train --model spg`)")
    f.set_defaults(handler=_cmd_fuse)


def _cmd_fuse(args) -> int:
    written = fuse_stills(args.ir, args.vis, args.output, mode=args.mode, palette=args.palette,
                          calibration=args.calibration, weights=args.weights)
    print(f"wrote {written} fused image{'s' if written != 1 else ''} to {args.output}")
    return 0


def fuse_stills(ir: Path, vis: Path, output: Path, *, mode: str, palette: str,
                calibration: Path | None = None, weights: Path | None = None) -> int:
    """Fuse one pair of files, or every same-named pair of two folders; returns the count."""
    try:
        fuser = make_fuser(FusionConfig(mode=mode, palette=palette, weights=weights))
    except ValueError as exc:
        raise UsageError(f"--{str(exc).split(':', 1)[0]}: {str(exc).split(':', 1)[-1].strip()}") from None
    cal = load_calibration(calibration) if calibration else None
    if not ir.is_dir() and output.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{output}: unknown image type {output.suffix or '(no suffix)'}; end the name in "
                         f"{', '.join(IMAGE_SUFFIXES)}")
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
