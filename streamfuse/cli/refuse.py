"""`streamfuse refuse` (fuse recordings again, locally or on a Ray cluster) and `bench-refuse`."""
from __future__ import annotations

import logging
from pathlib import Path

from streamfuse.cli.args import frame_size, positive_int
from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.fuse import MODES


def add_parsers(sub) -> None:
    modes = ", ".join(MODES)
    r = sub.add_parser("refuse", help="fuse recorded raw archives or clip pairs again, locally or on Ray",
                       description="Fuse raw archives (NAME.raw.mkv, from an mp4 sink with raw_archive: true), "
                                   "folders of them, or clip folders (an ir and a vis video or frame folder) again, "
                                   "each through the same pipeline as `streamfuse run`, into OUT_DIR/NAME.mp4 "
                                   "and OUT_DIR/summary.json. Inputs already done are skipped.")
    r.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    r.add_argument("-o", "--out", type=Path, required=True, metavar="OUT_DIR", help="folder of the outputs")
    r.add_argument("--rig", type=Path, metavar="RIG",
                   help="take calibration, sync, fusion, thermal and priors from this rig file (default: the "
                        "archive's own; for clips, the defaults with no calibration)")
    r.add_argument("--mode", metavar="NAME", help=f"fusion mode ({modes})")
    r.add_argument("--calibration", type=Path, metavar="FILE", help="calibration file to use instead")
    r.add_argument("--max-frames", type=positive_int, metavar="N", help="fuse at most N frames of each input")
    r.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run each input as a Ray task on the cluster at ADDRESS (HEAD:PORT; default auto: the "
                        "cluster this machine is part of); needs the cluster extra")
    r.add_argument("--workers", type=positive_int, metavar="N",
                   help="jobs at once (default: this machine's cores; with --ray, the cluster's CPUs)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(handler=_cmd_refuse)

    b = sub.add_parser("bench-refuse", help="re-fuse throughput with 1 and 2 workers on a local Ray cluster")
    b.add_argument("--archives", type=positive_int, default=4, metavar="N", help="archives recorded and re-fused (4)")
    b.add_argument("--frames", type=positive_int, default=60, metavar="N", help="frames per archive (60)")
    b.add_argument("--size", type=frame_size, default=(320, 256), metavar="WxH", help="frame size (320x256)")
    b.add_argument("--mode", default="pyramid", metavar="NAME", help="fusion mode of the re-fuse (pyramid)")
    b.set_defaults(handler=_cmd_bench_refuse)


def _cmd_refuse(args) -> int:
    from streamfuse.refuse.inputs import discover
    from streamfuse.refuse.job import JobSpec
    from streamfuse.refuse.runner import refuse_all

    _check_options(args)
    items = discover(args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = [JobSpec(item, args.out.resolve(), args.rig.resolve() if args.rig else None, args.mode,
                     args.calibration.resolve() if args.calibration else None, args.max_frames) for item in items]
    logging.basicConfig(format="streamfuse: %(message)s", level=logging.WARNING)
    summary = refuse_all(specs, args.workers, None if args.ray == "auto" else args.ray, args.ray is not None,
                         show_progress=not args.quiet)
    print(table(summary.results))
    print(f"{summary.frames} frames, {summary.fps:.1f} fps over {summary.wall_s:.1f} s; "
          f"summary: {args.out / 'summary.json'}")
    if summary.failed:
        names = ", ".join(f"{r.name} ({r.errors[0] if r.errors else 'failed'})" for r in summary.failed[:3])
        raise RuntimeFailure(f"{len(summary.failed)} of {len(summary.results)} inputs failed: {names}")
    return 0


def _check_options(args) -> None:
    """What can be checked before any job starts: the out folder, --rig, --calibration, --mode, ray."""
    from streamfuse.register.calibration import load_calibration
    from streamfuse.rig import load_rig

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"-o {args.out}: a file is in the way; give a folder")
    if args.mode and args.mode not in MODES:
        raise UsageError(f"--mode: expected one of {', '.join(MODES)}, got {args.mode!r}")
    if args.rig:
        load_rig(args.rig)
    if args.calibration:
        load_calibration(args.calibration)
    if args.ray not in (None, "auto") and Path(args.ray).exists():
        raise UsageError(f"--ray: {args.ray} is a file or folder here, not a cluster address; put --ray after "
                         f"the inputs, or write --ray auto")
    if args.ray is not None:
        from streamfuse.refuse.cluster import import_ray

        import_ray()


def table(results) -> str:
    """The final table: one row per input."""
    rows = [("input", "status", "frames", "fps", "drops", "error")]
    rows += [(r.name, r.status, str(r.frames), f"{r.fps:.1f}", str(r.drops), (r.errors[0] if r.errors else "")[:80])
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + ("  " + row[5] if row[5] else "")
                     for row in rows)


def _cmd_bench_refuse(args) -> int:
    from streamfuse.bench.refuse import bench_refuse

    if args.mode not in MODES:
        raise UsageError(f"--mode: expected one of {', '.join(MODES)}, got {args.mode!r}")
    bench_refuse(args.archives, args.frames, args.size, args.mode)
    return 0
