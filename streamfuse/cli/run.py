"""`streamfuse run`, `check` and `devices`: a rig's main job, its validation, and the cameras here."""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from streamfuse.cli.args import listen_address, non_negative_float, positive_float, positive_int
from streamfuse.errors import StreamfuseError, UsageError
from streamfuse.fuse import MODES

#: Without a terminal (a pipe, a log file, a service), a status line this often (s) by default.
STATUS_EVERY_S = 5.0
EPILOG = "Rig files are described in README.md; start with rigs/demo.yaml (no cameras needed)."


def add_parsers(sub) -> None:
    modes = ", ".join(MODES)
    r = sub.add_parser("run", help="run a rig: capture, align, fuse, record", epilog=EPILOG)
    r.add_argument("rig", type=Path, help="rig file, e.g. rigs/demo.yaml")
    limit = r.add_mutually_exclusive_group()
    limit.add_argument("--frames", type=positive_int, metavar="N", help="stop after N fused frames")
    limit.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    r.add_argument("--record", type=Path, metavar="OUT.mp4", help="also record the fused video to this MP4 file")
    r.add_argument("--skew-csv", type=Path, metavar="FILE.csv",
                   help="at exit, write the IR-visible sync skew distribution (pairs per 0.5 ms) to this CSV file")
    r.add_argument("--mode", metavar="NAME", help=f"fusion mode, overriding the rig ({modes})")
    r.add_argument("--display", action="store_true",
                   help="show the fused picture in a window (keys: h for help; q quits)")
    r.add_argument("--serve", type=listen_address, metavar="[HOST:]PORT",
                   help="serve the browser monitor (live picture, statistics, controls, /metrics) on "
                        "HOST:PORT; HOST defaults to 127.0.0.1, anything else needs a token")
    r.add_argument("--token", metavar="TOKEN", help="access token for --serve (default: $STREAMFUSE_TOKEN)")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.add_argument("--status-every", type=non_negative_float, default=STATUS_EVERY_S, metavar="S",
                   help="without a terminal (a pipe, a log, a service): a one-line status every S seconds "
                        f"(default {STATUS_EVERY_S:g}; 0 for none)")
    r.set_defaults(handler=_cmd_run)

    c = sub.add_parser("check", help="validate a rig file and the files it names, opening no device")
    c.add_argument("rig", type=Path)
    c.set_defaults(handler=_cmd_check)

    d = sub.add_parser("devices", help="list the cameras on this machine: formats, sizes, rates, thermal or not")
    d.set_defaults(handler=_cmd_devices)


@contextlib.contextmanager
def naming(rig_path: Path):
    """Usage errors raised inside name the rig file they come from (a calibration, a source,
    a sink of it), unless they already do or are about a command-line option."""
    try:
        yield
    except UsageError as exc:
        text = str(exc)
        if str(rig_path) in text or text.startswith("--"):
            raise
        named = type(exc)(f"{rig_path}: {text}")
        named.report = getattr(exc, "report", None)
        raise named from None


def _cmd_run(args) -> int:
    with naming(args.rig):
        return _run(args)


def _run(args) -> int:
    from streamfuse.cli.progress import print_summary, progress_printer, setup_logging
    from streamfuse.pipeline import run
    from streamfuse.rig import load_rig

    rig = load_rig(args.rig)
    if args.mode:
        rig = rig.with_mode(args.mode)
    if args.record:
        rig = rig.with_recording(args.record)
    rig = _with_viewers(rig, args)
    if args.skew_csv and not args.skew_csv.parent.is_dir():
        raise UsageError(f"--skew-csv: folder {args.skew_csv.parent} does not exist; create it or change the path")
    setup_logging(args.quiet)
    stop = threading.Event()
    _on_signals(stop)
    printer = None if args.quiet else progress_printer(args.status_every)
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
    from streamfuse.sinks.config import DisplaySinkConfig, MonitorSinkConfig

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


def _cmd_check(args) -> int:
    with naming(args.rig):
        return _check(args)


def _check(args) -> int:
    rig, lines = check_rig(args.rig)
    cal = rig.calibration_path or "none (cameras coincide)"
    from streamfuse.register.registrar import describe_registration

    print(f"{args.rig}: OK\n  {lines[0]}\n  {lines[1]}\n  calibration: {cal}\n"
          f"  registration: {describe_registration(rig.registration, rig.calibration)}\n"
          f"  fusion: {rig.fusion.mode}, palette {rig.fusion.palette}\n"
          f"  sinks: {', '.join(s.type for s in rig.sinks) or 'none'}")
    if rig.priors is not None:
        print(f"  priors: {rig.priors.describe()}; weights: `streamfuse models verify {args.rig}`")
    return 0


def check_rig(path: Path):
    """(the rig, a line per source): what `streamfuse check` validates (the rig file, every file
    it names, file sources opened and closed; cameras not opened). UsageError if anything fails."""
    from streamfuse.capture import DEVICE_TYPES
    from streamfuse.pipeline import open_rig_sources
    from streamfuse.rig import load_rig

    rig = load_rig(path)
    if isinstance(rig.ir, DEVICE_TYPES) or isinstance(rig.vis, DEVICE_TYPES):
        # Cameras are not opened: their settings were checked when the rig loaded.
        lines = [f"{role}: {cfg.type} {getattr(cfg, 'device', getattr(cfg, 'url', ''))} (not opened)"
                 for role, cfg in (("ir", rig.ir), ("vis", rig.vis))]
    else:
        ir, vis, _ = open_rig_sources(rig)
        ir.close()
        vis.close()
        lines = [ir.describe(), vis.describe()]
    return rig, lines


def _cmd_devices(args) -> int:
    from streamfuse.capture.devices import find_cameras, report

    print(report(find_cameras()))
    return 0
