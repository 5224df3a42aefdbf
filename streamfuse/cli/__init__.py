"""Command line: turns arguments into a rig and calls the stage that does the work.

Every error the user can cause ends as one line on stderr and an exit code: 2 for usage
errors (bad arguments, rig files, inputs), 1 for failures during a run, 130 after Ctrl-C
during start-up. Tracebacks are only for bugs.

One module per family of commands, each with `add_parser(s)(sub)`: run.py (run, check,
devices), stills.py (fuse), calibrate.py, models.py, eval.py, train.py, bench.py,
service.py (+ unit.py, the unit's text), refuse.py (refuse, bench-refuse); progress.py prints the
live line, the log lines and the summary. Library code never imports this package; heavy imports
(torch, the stages) happen inside the handlers, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from streamfuse.cli import bench, calibrate, eval, models, refuse, run, service, stills, train
from streamfuse.cli.run import EPILOG
from streamfuse.errors import StreamfuseError, one_line


def main(argv: list[str] | None = None) -> int:
    _keep_freed_memory()
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except StreamfuseError as exc:
        print(f"streamfuse: error: {one_line(str(exc))}", file=sys.stderr)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamfuse", epilog=EPILOG,
                                description="Real-time infrared + visible video fusion.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parsers(sub)
    stills.add_parser(sub)
    bench.add_parsers(sub)
    calibrate.add_parser(sub)
    models.add_parser(sub)
    eval.add_parser(sub)
    train.add_parser(sub)
    service.add_parser(sub)
    refuse.add_parsers(sub)
    return p
