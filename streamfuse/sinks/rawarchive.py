"""The raw archive of a recording (`raw_archive: true`): both raw streams, lossless, in one file.

`RawArchiveFile` writes each pair handed to the MP4 sink: the IR frame (once per distinct
frame: a slow IR camera's frame serves several visible ones) as FFV1 in its own bit depth,
the visible frame as FFV1 bgr0 (exact), and for each a packet of the `times` stream with
its capture time in nanoseconds; the rig's description goes into the file metadata, written
with the header. The format is in `capture/archive.py`, which reads it back.

Crash safety as the IR archive's: clusters are cut every `ARCHIVE_CLUSTER_MS`, nothing
reaches the disk but whole frames (`CommittedOutput`), and the file is published under its
name once it holds a frame, so a killed process leaves a file readable to its last frames.
"""
from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

from streamfuse.capture.archive import ARCHIVE_FORMAT, ARCHIVE_SUFFIX, METADATA_KEY, TIMES_TITLE
from streamfuse.frames import Frame, FramePair
from streamfuse.sinks.containers import ARCHIVE_CLUSTER_MS, CommittedOutput, ContainerFile

#: Matroska's clock: milliseconds (the exact nanoseconds travel in the `times` stream).
_MS = Fraction(1, 1000)


def raw_archive_path(video: Path) -> Path:
    """The raw archive beside a recording: out.mp4 -> out.raw.mkv."""
    return video.with_name(video.stem + ARCHIVE_SUFFIX)


class RawArchiveFile(ContainerFile):
    """Both raw frames of each pair, lossless, with their capture times; opened lazily on the
    first pair, when sizes and formats are known. `metadata`: the rig's description."""

    def __init__(self, path: Path, metadata: dict):
        self.out = CommittedOutput(path)
        self._metadata = metadata
        self._streams: dict = {}
        self._last_pts = {"ir": -1, "vis": -1, "times": 0}
        self._last_ir_seq: int | None = None
        self._origin_ns = 0
        self._synced_at = 0.0

    def write(self, pair: FramePair) -> None:
        if self._container is None:
            self._open(pair)
        if pair.ir.seq != self._last_ir_seq:
            self._last_ir_seq = pair.ir.seq
            self._put(pair.ir)
        self._put(pair.vis)
        # Matroska writes each frame as it comes: make it durable about once a cluster.
        if self.out.commit() and time.monotonic() - self._synced_at >= ARCHIVE_CLUSTER_MS / 1000:
            self.out.sync()
            self._synced_at = time.monotonic()
        self.frames_muxed += 1
        # The muxer holds the newest packets until the other streams catch up: count them out.
        self.frames_in_file = max(self.frames_muxed - 2, 0)
        if self.frames_in_file:
            self.out.publish()

    def _put(self, frame: Frame) -> None:
        import av

        camera = frame.camera
        offset_ns = frame.t_ns - self._origin_ns
        pts = max(round(offset_ns / 1e6), self._last_pts[camera] + 1)
        self._last_pts[camera] = pts
        stream = self._streams[camera]
        if camera == "vis":
            video = av.VideoFrame.from_ndarray(frame.image, format="bgr24").reformat(format="bgr0")
        else:
            video = av.VideoFrame.from_ndarray(frame.image, format=_ir_format(frame))
        video.pts, video.time_base = pts, _MS
        clock = av.Packet(f"{camera} {frame.seq} {offset_ns}".encode("ascii"))
        clock.stream, clock.time_base = self._streams["times"], _MS
        # One clock stream for both cameras: its stamps may not go back (the exact time is the text).
        clock.pts = clock.dts = self._last_pts["times"] = max(pts, self._last_pts["times"])
        clock.duration = 1
        self._container.mux(clock)
        for packet in stream.encode(video):
            self._container.mux(packet)

    def _open(self, pair: FramePair) -> None:
        import av

        self._origin_ns = min(pair.ir.t_ns, pair.vis.t_ns)
        self._container = av.open(self.out, mode="w", format="matroska", options={
            "cluster_time_limit": str(ARCHIVE_CLUSTER_MS), "flush_packets": "1"})
        meta = {**self._metadata, "format": ARCHIVE_FORMAT, "origin_ns": self._origin_ns}
        self._container.metadata[METADATA_KEY] = json.dumps(meta, sort_keys=True)
        for frame, pix_fmt in ((pair.ir, _ir_format(pair.ir)), (pair.vis, "bgr0")):
            stream = self._container.add_stream("ffv1", rate=30)
            stream.width, stream.height = frame.size
            stream.pix_fmt = pix_fmt
            stream.metadata["title"] = frame.camera
            stream.codec_context.time_base = _MS
            stream.codec_context.gop_size = 1  # every frame decodable alone: a cut file loses nothing more
            stream.options = {"level": "3", "slices": "4", "slicecrc": "1"}
            self._streams[frame.camera] = stream
        times = self._container.add_mux_stream("subrip")  # packets written as they are: no encoder
        times.time_base = _MS
        times.metadata["title"] = TIMES_TITLE
        self._streams["times"] = times
        self._stream = self._streams["ir"]  # ContainerFile.close flushes this one; FFV1 holds nothing back

    def close(self) -> None:
        if self._container is not None:
            for packet in self._streams["vis"].encode():
                self._container.mux(packet)
        super().close()


def _ir_format(ir: Frame) -> str:
    return "gray16le" if ir.pixel_format == "gray16" else "gray"
