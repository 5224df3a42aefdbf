"""Replay one camera of a raw archive (`NAME.raw.mkv`, an mp4 sink's `raw_archive: true`).

The format, written by `sinks/rawarchive.py` and read here:

- one Matroska file with three streams, told apart by their titles: `ir` (FFV1, gray16le or
  gray: the raw counts), `vis` (FFV1, bgr0: the visible frames exactly) and `times`, a text
  stream with one packet per video frame, `"<camera> <seq> <offset_ns>"`: the frame's capture
  time in nanoseconds after the archive's origin (Matroska's own clock has only milliseconds);
- the k-th `times` packet of a camera belongs to the k-th frame of that camera's stream;
- file metadata `STREAMFUSE_RIG`: JSON of `rig.recording_metadata` (calibration file text,
  camera sizes, rates and settings, sync, fusion, thermal, registration, priors).

A file cut by a crash ends on a whole frame; the reader stops at the last frame that has its
time. Frames are stamped `t0_ns + offset_ns`, so both cameras keep their recorded pairing.
"""
from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from streamfuse import threads
from streamfuse.capture.base import Source
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import Frame, now_ns

#: A raw archive's name ends with this.
ARCHIVE_SUFFIX = ".raw.mkv"
#: The file-metadata key of the rig description.
METADATA_KEY = "STREAMFUSE_RIG"
#: Title of the text stream of capture times.
TIMES_TITLE = "times"
#: Version of the format above, in the metadata as `format`.
ARCHIVE_FORMAT = 1

_FORMATS = {"gray8": "gray", "gray16": "gray16le", "bgr24": "bgr24"}


@dataclass(frozen=True)
class ArchiveConfig:
    """One camera of a raw archive (rig `sources.ir` or `sources.vis` with `type: archive`):
    the `ir` source reads the archive's IR stream, the `vis` source its visible stream."""

    path: Path
    type: Literal["archive"] = "archive"
    #: fast: as quickly as the pipeline takes frames; recorded: at the recorded rate.
    pace: Literal["fast", "recorded"] = "fast"


def read_metadata(path: Path) -> dict:
    """The rig description a raw archive carries; SourceError if `path` is not one."""
    import av

    try:
        with av.open(str(path)) as container:
            text = container.metadata.get(METADATA_KEY)
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"{path}: cannot read it as a raw archive ({_reason(exc)}); "
                          f"it is corrupt or not a Matroska file") from None
    if text is None:
        raise SourceError(f"{path}: no {METADATA_KEY} metadata, so not a streamfuse raw archive; "
                          f"record one with `raw_archive: true` on an mp4 sink")
    try:
        meta = json.loads(text)
    except ValueError:
        raise SourceError(f"{path}: its {METADATA_KEY} metadata is not JSON; the archive is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != ARCHIVE_FORMAT:
        raise SourceError(f"{path}: raw archive format {meta.get('format') if isinstance(meta, dict) else '?'}, "
                          f"this streamfuse reads format {ARCHIVE_FORMAT}")
    return meta


class ArchiveSource(Source):
    """Decodes one camera's stream of a raw archive with PyAV on the capture thread."""

    def __init__(self, name: str, cfg: ArchiveConfig):
        super().__init__(name)
        self.cfg = cfg
        self.realtime = cfg.pace == "recorded"
        self._container = None
        self._images: collections.deque = collections.deque()
        self._times: collections.deque = collections.deque()
        self._ended = False
        self._seq = 0

    def open(self) -> None:
        import av

        path = self.cfg.path
        if not path.exists():
            raise SourceError(f"{self.name} source: {path} does not exist; fix the path")
        meta = read_metadata(path)
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.name} source: cannot read {path} ({_reason(exc)})") from None
        streams = {s.metadata.get("title"): s for s in self._container.streams}
        if self.name not in streams or TIMES_TITLE not in streams:
            self.close()
            raise SourceError(f"{self.name} source: {path} has no {self.name} or {TIMES_TITLE} stream; "
                              f"it is not a complete raw archive")
        self._video, self._clock = streams[self.name], streams[TIMES_TITLE]
        self._video.thread_type = "SLICE"  # FFV1's slices: no frame held back in the decoder
        self._video.thread_count = threads.current().decoder
        cc = self._video.codec_context
        self.size = (cc.width, cc.height)
        camera = meta.get("cameras", {}).get(self.name, {})
        self.fps = Fraction(camera.get("fps") or self._video.average_rate or 30)
        if self.name == "vis":
            self.pixel_format = "bgr24"
        else:
            self.pixel_format = "gray16" if "16" in (cc.pix_fmt or "") else "gray8"
        self._packets = self._container.demux(self._video, self._clock)

    def read(self) -> Frame | None:
        import av

        while not (self._images and self._times):
            if self._ended:
                return None
            try:
                packet = next(self._packets)
                self._take(packet)
            except StopIteration:
                self._ended = True
            except (av.FFmpegError, ValueError) as exc:
                raise RuntimeFailure(f"{self.name} source: {self.cfg.path} is corrupt after frame "
                                     f"{self._seq} ({_reason(exc)})") from None
        return self._stamp(self._images.popleft(), self._times.popleft())

    def _take(self, packet) -> None:
        if packet.stream is self._video:
            for frame in packet.decode():  # the empty packet at the end flushes the decoder
                self._images.append(frame.to_ndarray(format=_FORMATS[self.pixel_format]))
        elif packet.size:
            camera, _, offset = bytes(packet).decode("ascii").split()
            if camera == self.name:
                self._times.append(int(offset))

    def _stamp(self, image, offset_ns: int) -> Frame:
        t_ns = self.t0_ns + offset_ns
        if self.realtime:
            delay = (t_ns - now_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
        frame = Frame(image, t_ns, self._seq, self.name, self.pixel_format, now_ns())
        self._seq += 1
        return frame

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[-1].strip() or type(exc).__name__
