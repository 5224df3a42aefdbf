"""The `streamfuse calibrate` command: argument parsing and the four methods' front ends."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from streamfuse.cli.args import frame_size
from streamfuse.errors import RuntimeFailure, UsageError

DESCRIPTION = """Find the mapping from the thermal camera's pixels to the visible camera's and write
it as a calibration file (see calibration/README.md). Write it where a rig's `calibration:`
points (--rig RIG) or to a file (-o FILE). Nothing is written when calibration fails."""


def add_parser(sub) -> None:
    """Add `calibrate` and its methods to the CLI's subparsers."""
    out = argparse.ArgumentParser(add_help=False)
    where = out.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", type=Path, metavar="FILE", help="calibration file to write")
    where.add_argument("--rig", type=Path, metavar="RIG", help="write the file this rig's `calibration:` names")

    c = sub.add_parser("calibrate", help="find the IR-to-visible mapping (grab, board, points, click, scene, report)",
                       description=DESCRIPTION)
    methods = c.add_subparsers(dest="method", required=True, metavar="METHOD")
    b = methods.add_parser("board", parents=[out], help="a checkerboard or circle grid seen by both cameras",
                           description="Pairs are matched by file name. Warm or cool the board against the room.")
    b.add_argument("ir", type=Path, help="IR image, or folder of IR images")
    b.add_argument("vis", type=Path, help="visible image, or folder of visible images")
    b.add_argument("--pattern", required=True, metavar="KIND:COLSxROWS",
                   help="chessboard:9x6 (inner corners), circles:7x5 or acircles:4x11")
    p = methods.add_parser("points", parents=[out], help="point pairs from a CSV or YAML file")
    p.add_argument("file", type=Path, help="x_ir,y_ir,x_vis,y_vis per line (CSV), or YAML with points:")
    p.add_argument("--ir-size", type=frame_size, metavar="WxH", help="IR frame size (unless the YAML file gives it)")
    p.add_argument("--vis-size", type=frame_size, metavar="WxH", help="visible frame size (likewise)")
    k = methods.add_parser("click", parents=[out], help="click point pairs in a window (needs a screen)")
    k.add_argument("ir", type=Path, help="IR image")
    k.add_argument("vis", type=Path, help="visible image")
    s = methods.add_parser("scene", parents=[out], help="no target: align the edges of ordinary scene pairs",
                           description="Pairs are matched by file name. A scene with structure at the "
                                       "working distance (buildings, road edges, people) in daylight works best.")
    s.add_argument("ir", type=Path, help="IR image, or folder of IR images")
    s.add_argument("vis", type=Path, help="visible image, or folder of visible images")
    s.add_argument("--init", type=Path, metavar="FILE",
                   help="calibration file to start from (default: the rig's, else a search)")
    s.add_argument("--min-confidence", type=float, default=0.2, metavar="C",
                   help="least confidence (0..1: the orientation-field correlation) an accepted pair "
                        "needs to count (0.2)")
    g = methods.add_parser("grab", help="save raw IR/visible pairs from a rig's cameras, to calibrate from",
                           description="Hold the board still at each position; a pair is saved every "
                                       "--every seconds. The rig may say `calibration: null` for this.")
    g.add_argument("rig", type=Path, help="rig file")
    g.add_argument("out", type=Path, help="new folder: OUT/ir and OUT/vis get pairNNN.png")
    g.add_argument("--count", type=int, default=12, metavar="N", help="pairs to save (12)")
    g.add_argument("--every", type=float, default=3.0, metavar="S", help="seconds between pairs (3)")
    r = methods.add_parser("report", help="print the accuracy figures (synthetic rig and ../shared/data)")
    r.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    c.set_defaults(handler=run)


def run(args) -> int:
    if args.method == "report":
        from streamfuse.calibrate.report import report

        report(args.data)
        return 0
    if args.method == "grab":
        from streamfuse.calibrate.grab import grab
        from streamfuse.rig import load_rig

        if args.count < 1 or args.every < 0:
            raise UsageError("--count must be >= 1 and --every >= 0")
        saved = grab(load_rig(args.rig), args.out, args.count, args.every)
        if saved < args.count:
            raise RuntimeFailure(f"the inputs ended after {saved} of {args.count} pairs (kept in {args.out})")
        print(f"{saved} pairs in {args.out}/ir and {args.out}/vis")
        return 0
    output = _output(args)
    H, ir_size, vis_size, provenance, lines = {"board": _board, "points": _points, "click": _click,
                                               "scene": _scene}[args.method](args)
    from streamfuse.register.calibration import write_calibration

    write_calibration(output, H, ir_size, vis_size, provenance,
                      f"Written by `streamfuse calibrate {args.method}`; see calibration/README.md.")
    print("\n".join(lines + [f"wrote {output}"]))
    return 0


def _output(args) -> Path:
    if args.output is not None:
        return args.output
    try:
        data = yaml.safe_load(args.rig.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UsageError(f"{args.rig}: cannot read it as a rig file; give -o FILE instead") from None
    name = data.get("calibration") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise UsageError(f"{args.rig}: it has no `calibration: FILE` to write to; set one, or give -o FILE")
    return args.rig.parent / name


def _pairs(ir: Path, vis: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, IR image, visible image) of one pair of files or two folders matched by name."""
    from streamfuse.capture.images import match_pairs, read_image

    return [(a.stem, read_image(a, "ir"), read_image(b, "vis")) for a, b in match_pairs(ir, vis)]


def _sizes(pairs) -> tuple[tuple[int, int], tuple[int, int]]:
    sizes = {((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0])) for _, ir, vis in pairs}
    if len(sizes) > 1:
        raise UsageError(f"the image pairs differ in size ({len(sizes)} sizes); one calibration is for one pair "
                         "of camera modes")
    return sizes.pop()


def _board(args):
    from streamfuse.calibrate.board import (
        RECOMMENDED_VIEWS,
        Pattern,
        find_views,
        fit_views,
    )

    pattern = Pattern.parse(args.pattern)
    pairs = _pairs(args.ir, args.vis)
    ir_size, vis_size = _sizes(pairs)
    views, missing = find_views(pairs, pattern)
    fit = fit_views(views, ir_size, missing)
    lines = [f"{v.name}: {v.rms_px:.2f} px RMS" for v in fit.used]
    lines += [f"{name}: left out, {reason}" for name, reason in fit.rejected.items()]
    lines.append(f"{len(fit.used)} of {len(pairs)} views, {fit.rms_px:.2f} px RMS")
    if len(fit.used) < RECOMMENDED_VIEWS:
        lines.append(f"warning: {len(fit.used)} view{'s' if len(fit.used) > 1 else ''} used, the guide asks for "
                     f"about {RECOMMENDED_VIEWS} spread over the picture (near each corner, tilted a little); "
                     "the mapping may be good only where the board was")
    provenance = {"method": "circle-grid" if pattern.kind != "chessboard" else "checkerboard",
                  "pattern": str(pattern), "views": len(fit.used), "rms_px": fit.rms_px,
                  "per_view_rms_px": {v.name: v.rms_px for v in fit.used}, "rejected_views": fit.rejected}
    return fit.H_vis_from_ir, ir_size, vis_size, provenance, lines


def _points(args):
    from streamfuse.calibrate.points import read_points

    ir, vis, ir_size, vis_size = read_points(args.file)
    ir_size, vis_size = args.ir_size or ir_size, args.vis_size or vis_size
    if ir_size is None or vis_size is None:
        raise UsageError("give --ir-size and --vis-size (WxH), or put ir_size and vis_size in a YAML point file")
    return _from_points(ir, vis, ir_size, vis_size, "point-pairs")


def _click(args):
    from streamfuse.calibrate.click import PointPicker

    if args.ir.is_dir() or args.vis.is_dir():
        raise UsageError("click: give one IR image and one visible image, not folders")
    (_, ir_img, vis_img), = _pairs(args.ir, args.vis)
    ir, vis = PointPicker(ir_img, vis_img).run()
    sizes = ((ir_img.shape[1], ir_img.shape[0]), (vis_img.shape[1], vis_img.shape[0]))
    return _from_points(ir, vis, *sizes, "clicked-points")


def _from_points(ir, vis, ir_size, vis_size, method):
    from streamfuse.calibrate.points import fit_points
    from streamfuse.register.geometry import residuals

    H, used = fit_points(ir, vis, ir_size)
    errors = residuals(H, ir, vis)
    lines = [f"pair {i + 1}: {e:.2f} px{'' if u else ' (left out: inconsistent with the others)'}"
             for i, (e, u) in enumerate(zip(errors, used))]
    rms = float(np.sqrt(np.mean(errors[used] ** 2)))
    lines.append(f"{int(used.sum())} of {len(ir)} pairs, {rms:.2f} px RMS")
    return H, ir_size, vis_size, {"method": method, "views": 1, "points": int(used.sum()), "rms_px": rms}, lines


def _scene(args):
    from streamfuse.register import targetfree
    from streamfuse.register.calibration import load_calibration

    if not 0 <= args.min_confidence <= 1:
        raise UsageError(f"--min-confidence: expected a value from 0 to 1, got {args.min_confidence}")
    pairs = _pairs(args.ir, args.vis)
    ir_size, vis_size = _sizes(pairs)
    init = None
    if args.init is not None:
        given = load_calibration(args.init)
        if (given.ir_size, given.vis_size) != (ir_size, vis_size):
            raise UsageError(f"--init {args.init} is for {given.ir_size} -> {given.vis_size}, the images are "
                             f"{ir_size} -> {vis_size}")
        init = given.H_vis_from_ir
    elif args.rig is not None and _output(args).is_file():
        try:
            current = load_calibration(_output(args))
            if (current.ir_size, current.vis_size) == (ir_size, vis_size):
                init = current.H_vis_from_ir
        except UsageError:
            pass   # a broken file is about to be replaced: search instead
    estimates, lines, reasons = [], [], []
    for name, ir, vis in pairs:
        a = targetfree.estimate(ir, vis, init)
        if a.accepted and a.confidence >= args.min_confidence:
            lines.append(f"{name}: confidence {a.confidence:.2f}")
            estimates.append(a)
        else:
            reason = a.reason or f"confidence {a.confidence:.2f} < --min-confidence {args.min_confidence}"
            lines.append(f"{name}: refused, {reason}")
            reasons.append(reason)
    if not estimates:
        raise UsageError(f"no pair aligned ({len(pairs)} refused; {reasons[0]})")
    H = targetfree.combine(estimates, ir_size)
    lines.append(f"{len(estimates)} of {len(pairs)} pairs, median confidence "
                 f"{np.median([e.confidence for e in estimates]):.2f}")
    provenance = {"method": "target-free", "views": len(estimates), "rms_px": None,
                  "confidence": float(np.median([e.confidence for e in estimates])),
                  "started_from": "given mapping" if init is not None else "search"}
    return H, ir_size, vis_size, provenance, lines
