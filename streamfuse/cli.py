"""Command line: turns arguments into a rig and calls the stage that does the work.

Every error the user can cause ends as one line on stderr and an exit code: 2 for usage
errors (bad arguments, rig files, inputs), 1 for failures during a run, 130 after Ctrl-C
during start-up. Tracebacks are only for bugs.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from streamfuse.errors import StreamfuseError, UsageError

EPILOG = "Rig files are described in README.md; start with rigs/demo.yaml (no cameras needed)."


def main(argv: list[str] | None = None) -> int:
    _keep_freed_memory()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except StreamfuseError as exc:
        print(f"streamfuse: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streamfuse: interrupted", file=sys.stderr)
        return 130


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed frame-sized buffers instead of unmapping them.

    With stock settings every frame-sized temporary is a fresh mmap, page-faulted and unmapped
    again, which doubles the cost of fusion (../shared/FACTS.md). Equivalent to starting with
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ set. No-op off glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)   # glibc's maximum: buffers below 32 MB reuse the heap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(M_TOP_PAD, 64 << 20)


def _parser() -> argparse.ArgumentParser:
    from streamfuse.fuse import FUSION_MODES, NEEDS_WEIGHTS, FusionConfig
    from streamfuse.fuse.palettes import PALETTES

    modes = ", ".join(FUSION_MODES)
    ready = ",".join(m for m in FUSION_MODES if m not in NEEDS_WEIGHTS)  # no weights file needed
    p = argparse.ArgumentParser(prog="streamfuse", epilog=EPILOG,
                                description="Real-time infrared + visible video fusion.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a rig: capture, align, fuse, record", epilog=EPILOG)
    r.add_argument("rig", type=Path, help="rig file, e.g. rigs/demo.yaml")
    limit = r.add_mutually_exclusive_group()
    limit.add_argument("--frames", type=_positive_int, metavar="N", help="stop after N fused frames")
    limit.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    r.add_argument("--record", type=Path, metavar="OUT.mp4", help="also record the fused video to this MP4 file")
    r.add_argument("--skew-csv", type=Path, metavar="FILE.csv",
                   help="at exit, write the IR-visible sync skew distribution (pairs per 0.5 ms) to this CSV file")
    r.add_argument("--mode", metavar="NAME", help=f"fusion mode, overriding the rig ({modes})")
    r.add_argument("--display", action="store_true",
                   help="show the fused picture in a window (keys: h for help; q quits)")
    r.add_argument("--serve", type=_listen_address, metavar="[HOST:]PORT",
                   help="serve the browser monitor (live picture, statistics, controls, /metrics) on "
                        "HOST:PORT; HOST defaults to 127.0.0.1, anything else needs a token")
    r.add_argument("--token", metavar="TOKEN", help="access token for --serve (default: $STREAMFUSE_TOKEN)")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.set_defaults(handler=_cmd_run)

    f = sub.add_parser("fuse", help="fuse still images: one IR/visible pair, or two folders of pairs",
                       description="Fuse IR and visible stills. IR may be 8-bit (PNG/JPG) or 16-bit "
                                   "(PNG/TIFF). With two folders, pairs are matched by file name.")
    f.add_argument("ir", type=Path, help="IR image or folder")
    f.add_argument("vis", type=Path, help="visible image or folder")
    f.add_argument("-o", "--output", type=Path, required=True, help="output image, or folder for folders")
    default_mode = FusionConfig().mode  # the one default, FusionConfig's
    f.add_argument("--mode", default=default_mode, help=f"fusion mode ({modes}); default {default_mode}")
    f.add_argument("--palette", default="ironbow", help=f"IR palette ({', '.join(PALETTES)}); default ironbow")
    f.add_argument("--calibration", type=Path, help="calibration file when the images are not aligned")
    f.set_defaults(handler=_cmd_fuse)

    c = sub.add_parser("check", help="validate a rig file and the files it names, opening no device")
    c.add_argument("rig", type=Path)
    c.set_defaults(handler=_cmd_check)

    b = sub.add_parser("bench", help="throughput and per-stage timings beside the I/O floor")
    b.add_argument("rig", type=Path)
    b.add_argument("--frames", type=_positive_int, default=300, metavar="N", help="fused frames per run (300)")
    b.add_argument("--modes", default=ready, help=f"comma-separated modes (default: {ready})")
    b.add_argument("--rounds", type=_positive_int, default=3, metavar="R",
                   help="interleaved rounds; each run reports its fastest (3)")
    b.set_defaults(handler=_cmd_bench)

    d = sub.add_parser("devices", help="list the cameras on this machine: formats, sizes, rates, thermal or not")
    d.set_defaults(handler=_cmd_devices)

    from streamfuse.calibrate.cli import add_parser as add_calibrate_parser  # logic in calibrate/
    add_calibrate_parser(sub)

    from streamfuse.priors.commands import add_models_parser  # logic in priors/; torch only when used
    add_models_parser(sub)
    from streamfuse.evaluate import add_eval_parser  # logic in evaluate.py
    add_eval_parser(sub)
    from streamfuse.train import add_train_parser  # logic in train.py; torch only when used
    add_train_parser(sub)
    from streamfuse.models.bench import add_parser as add_bench_models_parser  # torch only when run
    add_bench_models_parser(sub)
    return p


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or int(port) > 65535 or (sep and not host):
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080, got {text!r}")
    return host, int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _cmd_run(args) -> int:
    from streamfuse.pipeline import run
    from streamfuse.progress import print_summary, progress_printer
    from streamfuse.rig import load_rig

    rig = load_rig(args.rig)
    if args.mode:
        rig = rig.with_mode(args.mode)
    if args.record:
        rig = rig.with_recording(args.record)
    rig = _with_viewers(rig, args)
    if args.skew_csv and not args.skew_csv.parent.is_dir():
        raise UsageError(f"--skew-csv: folder {args.skew_csv.parent} does not exist; create it or change the path")
    logging.basicConfig(format="streamfuse: %(message)s", level=logging.WARNING if args.quiet else logging.INFO)
    stop = threading.Event()
    _on_signals(stop)
    printer = None if args.quiet else progress_printer()
    try:
        report = run(rig, max_frames=args.frames, duration_s=args.duration, stop=stop, on_progress=printer)
    except StreamfuseError as exc:
        if getattr(exc, "report", None) is not None:
            print_summary(rig, exc.report)
            if args.skew_csv:
                exc.report.sync.write_skew_csv(args.skew_csv)
        raise
    print_summary(rig, report)
    if args.skew_csv:
        report.sync.write_skew_csv(args.skew_csv)
    return 0


def _with_viewers(rig, args):
    """The rig with the window and browser monitor asked for on the command line."""
    from streamfuse.sinks import DisplaySinkConfig, MonitorSinkConfig

    if args.token and not args.serve:
        raise UsageError("--token: only used with --serve")
    if args.display:
        rig = rig.with_sink(DisplaySinkConfig())
    if args.serve:
        try:
            rig = rig.with_sink(MonitorSinkConfig(host=args.serve[0], port=args.serve[1], token=args.token))
        except ValueError as exc:
            raise UsageError(f"--token: {str(exc).split(':', 1)[-1].strip()}") from None
    return rig


def _on_signals(stop: threading.Event) -> None:
    """Ctrl-C or SIGTERM asks the loop to stop; a second Ctrl-C interrupts at once."""
    def handler(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _cmd_fuse(args) -> int:
    from streamfuse.stills import fuse_stills

    written = fuse_stills(args.ir, args.vis, args.output, mode=args.mode, palette=args.palette,
                          calibration=args.calibration)
    print(f"wrote {written} fused image{'s' if written != 1 else ''} to {args.output}")
    return 0


def _cmd_check(args) -> int:
    from streamfuse.capture import DEVICE_TYPES
    from streamfuse.pipeline import open_rig_sources
    from streamfuse.rig import load_rig

    rig = load_rig(args.rig)
    if isinstance(rig.ir, DEVICE_TYPES) or isinstance(rig.vis, DEVICE_TYPES):
        # Cameras are not opened: their settings were checked when the rig loaded.
        lines = [f"{role}: {cfg.type} {getattr(cfg, 'device', getattr(cfg, 'url', ''))} (not opened)"
                 for role, cfg in (("ir", rig.ir), ("vis", rig.vis))]
    else:
        ir, vis, _ = open_rig_sources(rig)
        ir.close()
        vis.close()
        lines = [ir.describe(), vis.describe()]
    cal = rig.calibration_path or "none (cameras coincide)"
    from streamfuse.register import describe_registration

    print(f"{args.rig}: OK\n  {lines[0]}\n  {lines[1]}\n  calibration: {cal}\n"
          f"  registration: {describe_registration(rig.registration, rig.calibration)}\n"
          f"  fusion: {rig.fusion.mode}, palette {rig.fusion.palette}\n"
          f"  sinks: {', '.join(s.type for s in rig.sinks) or 'none'}")
    if rig.priors is not None:
        print(f"  priors: {rig.priors.describe()}; weights: `streamfuse models verify {args.rig}`")
    return 0


def _cmd_devices(args) -> int:
    from streamfuse.devices import find_cameras, report

    print(report(find_cameras()))
    return 0


def _cmd_bench(args) -> int:
    from streamfuse.bench import bench
    from streamfuse.rig import load_rig

    rig = load_rig(args.rig)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise UsageError("--modes: name at least one fusion mode")
    for mode in modes:
        rig.with_mode(mode)  # validates the name before any run starts
    print(bench(rig, modes, args.frames, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
