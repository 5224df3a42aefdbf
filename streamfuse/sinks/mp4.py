"""The MP4 recording sink: crash-safe fragmented MP4, segments, retention, a raw IR archive.

Crash safety. The file is a fragmented MP4 (`movflags frag_keyframe+empty_moov+
default_base_moof`): an empty header first, then one self-contained fragment per keyframe
interval (`keyframe_s`, 1 s by default). When the process dies (kill -9, power loss) every
finished fragment stays playable and only the fragment being written is lost, plus what the
encoder holds back: its lookahead is cut to `ENCODER_DELAY_S` (0.2 s), so at most about
1.2 s of video. Each finished fragment is written in one piece and fsync'ed, so it is on the
disk, not only in the page cache.

Segments. With `segment_s` or `segment_mb` the recording is cut into files named
`<stem>-YYYYmmdd-HHMMSS-mmm<suffix>` (local time of the first frame), each with its own
encoder, so each starts with a keyframe and plays alone. `keep: N` deletes all but the
newest N files of that name pattern in the folder, earlier runs' included.

IR archive. `ir_archive: true` also writes the raw IR frame of each pair (before display
mapping, 16 bits kept) losslessly as FFV1 in Matroska (`<stem>.ir.mkv`, segmented alike),
for radiometric analysis later. Matroska clusters are cut every second for the same crash
safety.

Raw archive. `raw_archive: true` writes both raw frames of each pair (the IR counts and the
visible frame, lossless) with their exact capture times and the rig's calibration and
settings into `<stem>.raw.mkv` (segmented alike, crash-safe alike; `rawarchive.py`):
`streamfuse refuse` fuses it again, with any mode, through the same pipeline.

Errors. A full disk (ENOSPC, EDQUOT) or any other write error stops this recording with one
line naming the file, while the pipeline and the other sinks go on (see `sinks.SinkRunner`).

The container files themselves (encoder settings, fragments committed whole) are in
`containers.py`.
"""
from __future__ import annotations

import errno
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.frames import Frame
from streamfuse.sinks.base import Sink, StreamInfo
from streamfuse.sinks.config import Mp4SinkConfig
from streamfuse.sinks.containers import (
    ArchiveFile,
    VideoFile,
    choose_encoder,
)
from streamfuse.sinks.rawarchive import RawArchiveFile, raw_archive_path

log = logging.getLogger("streamfuse")

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class Mp4Sink(Sink):
    """H.264 in crash-safe MP4 through PyAV; presentation times are the frames' capture times."""

    def __init__(self, cfg: Mp4SinkConfig):
        self.cfg = cfg
        self.name = "mp4"
        self.frames = 0
        self.codec = cfg.codec
        self.segments: list[Path] = []
        self._video: VideoFile | None = None
        self._archive: ArchiveFile | None = None
        self._raw: RawArchiveFile | None = None
        self._bytes_done = 0
        self._failed = False

    def open(self, info: StreamInfo) -> None:
        path = self.cfg.path
        if not path.parent.is_dir():
            raise UsageError(f"recording {path}: folder {path.parent} does not exist; create it or change the path")
        self._info = info
        self._size = (info.size[0] - info.size[0] % 2, info.size[1] - info.size[1] % 2)  # yuv420p: even sizes
        self.codec, why = choose_encoder(self.cfg, self._size, info.fps)
        self._segmented = self.cfg.segment_s is not None or self.cfg.segment_mb is not None
        _remove_stale_partials(path)
        if not self._segmented:
            self._start_file(path, at_start=True)  # a bad path fails here, at start-up
        log.info("recording %s%s with %s%s", path, " in segments" if self._segmented else "", self.codec, why)

    def write(self, frame: Frame) -> None:
        import av

        try:
            if self._video is None or self._segment_full(frame.t_ns):
                self._rotate()
            self._video.write(frame.image, frame.t_ns)
            if self._archive is not None and frame.pair is not None:
                self._archive.write(frame.pair.ir)
            if self._raw is not None and frame.pair is not None:
                self._raw.write(frame.pair)
        except (OSError, av.FFmpegError) as exc:  # a Python OSError comes through CommittedOutput
            self._failed = True
            raise self._failure(exc) from None
        self.frames += 1

    def close(self) -> None:
        self._finish_file(abandon=self._failed)

    def state(self) -> dict[str, float]:
        video = self._video
        current = video.out.bytes if video is not None else 0
        archive = sum(a.out.bytes for a in (self._archive, self._raw) if a is not None)
        return {"recording": float(video is not None and not self._failed), "frames": self.frames,
                "bytes": self._bytes_done + current + archive, "segments": len(self.segments)}

    def _segment_full(self, t_ns: int) -> bool:
        if not self._segmented:
            return False
        video = self._video
        if self.cfg.segment_s is not None and video.t0_ns is not None and \
                t_ns - video.t0_ns >= self.cfg.segment_s * 1e9:
            return True
        return self.cfg.segment_mb is not None and video.encoded_bytes >= self.cfg.segment_mb * 1e6

    def _rotate(self) -> None:
        self._finish_file(abandon=False)
        self._start_file(segment_path(self.cfg.path), at_start=False)
        if self.cfg.keep is not None:  # the new segment, not yet under its name, is one of them
            prune_segments(self.cfg.path, self.cfg.keep - 1)

    def _start_file(self, path: Path, at_start: bool) -> None:
        import av

        try:
            self._video = VideoFile(path, self.codec, self._size, self._info.fps, self.cfg)
            if self.cfg.ir_archive:
                self._archive = ArchiveFile(archive_path(path))
            if self.cfg.raw_archive:
                self._raw = RawArchiveFile(raw_archive_path(path), self._info.rig_metadata)
        except (OSError, av.FFmpegError) as exc:
            self._finish_file(abandon=True)
            if at_start:
                raise UsageError(f"recording {path}: cannot write ({exc}); check the path and permissions") from None
            self._failed = True
            raise RuntimeFailure(f"recording {path}: cannot start a new segment after {self.frames} frames "
                                 f"({exc}); check the folder and free space") from None
        self.segments.append(path)

    def _finish_file(self, abandon: bool) -> None:
        """Finish the current file (and archive); after a failed write, `abandon` them as
        they are on the disk: more writes after a lost fragment would leave a gap."""
        for name in ("_video", "_archive", "_raw"):
            part = getattr(self, name)
            if part is None:
                continue
            setattr(self, name, None)
            self._bytes_done += part.out.bytes
            if abandon:
                part.abandon()
            else:
                part.close()

    def _failure(self, exc: Exception) -> RuntimeFailure:
        where = self.segments[-1] if self.segments else self.cfg.path
        kept = self._video.frames_in_file if self._video is not None else 0
        earlier = len(self.segments) - 1
        what = (f"{where.name} keeps its first {kept} frames (its last whole fragment)" if kept else
                f"{where.name} got no whole fragment and is removed")
        if earlier:
            what += f"; the {earlier} earlier segment{'s are' if earlier > 1 else ' is'} complete"
        if getattr(exc, "errno", None) in _FULL_DISK:
            return RuntimeFailure(f"recording {where}: disk full after {self.frames} frames; {what}; free space, "
                                  f"or bound the recording with segment_mb and keep")
        return RuntimeFailure(f"recording {where}: write failed after {self.frames} frames ({exc}); {what}")


def _remove_stale_partials(path: Path) -> None:
    """Remove what a killed earlier run left of this recording under hidden names: never
    playable (it died before its first whole fragment), and nothing will finish it."""
    stamp = r"(-\d{8}-\d{6}-\d{3})?"
    name = re.compile(r"\." + re.escape(path.stem) + stamp + r"(\.ir\.mkv|\.raw\.mkv|" + re.escape(path.suffix) + r")\.partial$")
    for stale in path.parent.iterdir():
        if name.match(stale.name):
            stale.unlink(missing_ok=True)


def segment_path(path: Path, now: datetime | None = None) -> Path:
    """`<stem>-YYYYmmdd-HHMMSS-mmm<suffix>` beside `path`, for the local time `now`; a
    millisecond later if that name is taken, so names sort in recording order."""
    now = now or datetime.now()
    while True:
        candidate = path.with_name(f"{path.stem}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}{path.suffix}")
        if not candidate.exists():
            return candidate
        now += timedelta(milliseconds=1)


def archive_path(video: Path) -> Path:
    """The IR archive beside a recording: out.mp4 -> out.ir.mkv."""
    return video.with_name(video.stem + ".ir.mkv")


def prune_segments(path: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` segments of recording `path` (and their archives);
    returns the deleted files."""
    stamp = r"-\d{8}-\d{6}-\d{3}"
    video = re.compile(re.escape(path.stem) + stamp + re.escape(path.suffix) + "$")
    segments = sorted(p for p in path.parent.iterdir() if video.match(p.name))
    deleted = []
    for old in segments[:max(len(segments) - keep, 0)]:
        for f in (old, archive_path(old), raw_archive_path(old)):
            try:
                f.unlink()
                deleted.append(f)
            except FileNotFoundError:
                pass
    return deleted

