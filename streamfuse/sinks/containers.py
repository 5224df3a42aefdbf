"""Crash-safe container files for the recording sink: H.264 in fragmented MP4, FFV1 in Matroska.

`CommittedOutput` is the file under a container: nothing reaches the disk until a whole
fragment (MP4) or cluster (Matroska) is there, so a file only ever ends on such a boundary.
`VideoFile` encodes fused frames with settings that hold little back (`ENCODER_DELAY_S`);
`ArchiveFile` keeps raw IR frames losslessly, 16 bits included. See `mp4.py` for the sink.
"""
from __future__ import annotations

import errno
import os
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from streamfuse import threads
from streamfuse.errors import UsageError
from streamfuse.frames import Frame
from streamfuse.sinks.config import Mp4SinkConfig

#: Hardware H.264 encoders tried in this order by `codec: auto`. (h264_vaapi is not tried:
#: it needs frames uploaded to GPU surfaces, and PyAV's FFmpeg build does not include it.)
HW_ENCODERS = ("h264_nvenc", "h264_v4l2m2m")
#: The video clock is at least this fine (90 kHz, the usual video clock).
MIN_CLOCK_HZ = 90_000
#: Frames the H.264 encoder may hold back, in seconds of video: a crash loses this much on
#: top of the open fragment.
ENCODER_DELAY_S = 0.2
#: Matroska cluster length of the IR archive (ms): what a crash may lose of it.
ARCHIVE_CLUSTER_MS = 1000


def choose_encoder(cfg: Mp4SinkConfig, size: tuple[int, int], fps: Fraction) -> tuple[str, str]:
    """(encoder, why): `cfg.codec` checked to open with the options it will get; for "auto"
    the first hardware encoder that opens, else libx264 with the reasons the others did not.
    A hardware encoder named explicitly that does not open is a UsageError, not a fallback."""
    import av

    codec = cfg.codec
    if codec != "auto":
        reason = _open_error(av, codec, size, fps, cfg) if codec != "libx264" else ""
        if reason:
            raise UsageError(f"recording: encoder {codec} cannot be used here ({reason}); "
                             f"use codec: auto or libx264")
        return codec, ""
    reasons = []
    for name in HW_ENCODERS:
        reason = _open_error(av, name, size, fps, cfg)
        if not reason:
            return name, " (hardware)"
        reasons.append(f"{name}: {reason}")
    return "libx264", f" (no hardware H.264 encoder: {'; '.join(reasons)})"


def _open_error(av, name: str, size: tuple[int, int], fps: Fraction, cfg: Mp4SinkConfig) -> str:
    """Why encoder `name` does not open for `size` at `fps` with `cfg`'s options ('' if it does)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = 1 / Fraction(fps)
        _configure(ctx, name, size, fps, cfg)
        ctx.open()
    except av.codec.codec.UnknownCodecError:
        return "not in this FFmpeg build"
    except (av.FFmpegError, OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ""


def _configure(ctx, codec: str, size: tuple[int, int], fps: Fraction, cfg: Mp4SinkConfig) -> None:
    """Encoder settings for a crash-safe recording with `cfg`'s quality: a keyframe every
    `keyframe_s`, and nothing held back in the encoder (no lookahead, no B-frames)."""
    ctx.gop_size = max(1, round(float(fps) * cfg.keyframe_s))
    if codec == "libx264":
        # x264's frame threads (one per core by default) each hold a frame, and compete with
        # the frame loop for the cores: the thread budget decides.
        ctx.thread_count = threads.current().encoder
        # veryfast holds 11 frames (0.44 s at 25 fps) in its lookahead; ENCODER_DELAY_S of it
        # keeps B-frames and mbtree. (tune=zerolatency, no lookahead at all, made the files
        # of the synthetic street 2.4x larger; this one 0.87x of the default's.)
        lookahead = max(1, round(float(fps) * ENCODER_DELAY_S))
        ctx.options = {"preset": cfg.preset, "crf": str(cfg.crf),
                       "x264-params": f"rc-lookahead={lookahead}:sync-lookahead=0"}
    elif codec == "h264_nvenc":
        ctx.options = {"preset": "p4", "tune": "ll", "rc": "vbr", "cq": str(cfg.crf), "bf": "0",
                       "delay": "0", "zerolatency": "1"}
    else:  # h264_v4l2m2m takes a bit rate: about 0.15 bit per pixel, as libx264 at crf 23 here
        ctx.bit_rate = round(size[0] * size[1] * float(fps) * 0.15)


class CommittedOutput:
    """The file under a container; PyAV writes through it.

    Nothing reaches the file until `commit()`, which the writers call after each packet they
    hand the muxer. The muxers write whole fragments (MP4) or clusters (Matroska) at once, and
    flush after every packet (`flush_packets`), so the file only ever ends on such a boundary:
    a write that fails half-way (a full disk) is cut back to the last whole one, and what is
    on the disk stays playable to its last frame.

    Until the writer knows the file holds a whole fragment it is written under a hidden name
    (`partial_path`) and then renamed (`publish`), so a process killed at any moment never
    leaves an empty or header-only file under the recording's name; a file closed with no
    frame in it is removed.
    """

    def __init__(self, path: Path):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
        self.path = path
        #: Where the bytes go until the file is playable: a hidden name beside `path`.
        self.partial = partial_path(path)
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._discard = False
        self._pending = bytearray()
        self._pos = 0   # file offset of the pending bytes
        self._size = 0  # bytes in the file
        self.published = False

    @property
    def bytes(self) -> int:
        return max(self._size, self._pos + len(self._pending))

    def write(self, data) -> int:
        if not self._discard:
            self._pending += data
        return len(data)

    def tell(self) -> int:
        return self._pos + len(self._pending)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.commit()
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def commit(self) -> bool:
        """Write what the muxer handed over; True if there was anything. On an error while
        appending, the file is cut back to where it was, and the error raised."""
        if not self._pending:
            return False
        data, self._pending = bytes(self._pending), bytearray()
        try:
            self._write_at(self._pos, data)
        except OSError:
            if self._pos == self._size:
                os.ftruncate(self._fd, self._size)
            raise
        self._pos += len(data)
        self._size = max(self._size, self._pos)
        return True

    def publish(self) -> None:
        """Give the file its real name (durably), once it holds a whole fragment or cluster, so
        that a file under that name always opens and decodes; a no-op after the first time."""
        if self.published:
            return
        os.fsync(self._fd)
        os.replace(self.partial, self.path)
        sync_folder(self.path.parent)
        self.published = True

    def _write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def sync(self) -> None:
        os.fsync(self._fd)

    def discard(self) -> None:
        """Leave the file as it is on the disk: whatever the muxer writes from now on is dropped."""
        self._discard, self._pending = True, bytearray()

    def close(self, keep: bool) -> None:
        """Close the file: under its real name if `keep` (it holds frames to play), else removed."""
        os.close(self._fd)
        if not self.published:
            if keep:
                os.replace(self.partial, self.path)
                self.published = True
            else:
                self.partial.unlink(missing_ok=True)


def partial_path(path: Path) -> Path:
    """The hidden name a recording file has until it is playable: out.mp4 -> .out.mp4.partial."""
    return path.with_name(f".{path.name}.partial")


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



class ContainerFile:
    """What a video file and the IR archive share: a muxer writing through an `CommittedOutput`.

    `frames_in_file`: frames on the disk in whole fragments or clusters, what the file plays if
    the process dies now; `frames_muxed`: frames handed to the muxer so far."""

    out: CommittedOutput
    _container = None
    _stream = None
    frames_in_file = 0
    frames_muxed = 0

    def close(self) -> None:
        """Flush the encoder, write the trailer, make it durable."""
        finished = False
        try:
            if self._container is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
                    self.frames_muxed += 1
                self._container.close()
                self.out.commit()
                self.out.sync()
            finished = True
        finally:
            if finished:
                self.frames_in_file = self.frames_muxed
            self.out.close(keep=self.frames_in_file > 0)

    def abandon(self) -> None:
        """Release the muxer, leaving the file as it is on the disk (after a failed write it
        ends on a whole fragment; more writes after a lost one would leave a gap)."""
        self.out.discard()
        try:
            if self._container is not None:
                self._container.close()
        except Exception:  # whatever the muxer says while writing into the void: nothing to save
            pass
        finally:
            self.out.close(keep=self.frames_in_file > 0)


class VideoFile(ContainerFile):
    """One fragmented MP4 with its own encoder; pts from capture times, relative to the first."""

    def __init__(self, path: Path, codec: str, size: tuple[int, int], fps: Fraction, cfg: Mp4SinkConfig):
        import av

        self.out = CommittedOutput(path)
        try:
            self._container = av.open(self.out, mode="w", format="mp4", options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
            stream = self._container.add_stream(codec, rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            _tag_bt601_limited(stream.codec_context)
            self.time_base = output_time_base(fps, MIN_CLOCK_HZ)
            stream.codec_context.time_base = self.time_base
            _configure(stream.codec_context, codec, size, fps, cfg)
        except BaseException:
            self.out.close()
            raise
        self._stream = stream
        self.t0_ns: int | None = None
        self.encoded_bytes = 0  # what the encoder produced, muxed or held in the open fragment
        self._last_pts = -1
        self._fragment_start = 0  # the first frame of the fragment still open

    def write(self, image, t_ns: int) -> None:
        import av

        w, h = self._stream.width, self._stream.height
        if image.shape[1] != w or image.shape[0] != h:
            image = image[:h, :w]  # drop an odd last row/column
        video = av.VideoFrame.from_ndarray(bgr_to_i420(image), format="yuv420p")
        if self.t0_ns is None:
            self.t0_ns = t_ns
        pts = round((t_ns - self.t0_ns) / self.time_base / 1_000_000_000)
        video.pts = max(pts, self._last_pts + 1)  # timestamps must strictly increase
        video.time_base = self.time_base
        self._last_pts = video.pts
        self._mux(self._stream.encode(video))

    def _mux(self, packets) -> None:
        for packet in packets:
            self.encoded_bytes += packet.size
            if packet.is_keyframe:  # it opens a new fragment: the one before is complete
                self._fragment_start = self.frames_muxed
            self._container.mux(packet)
            self.frames_muxed += 1
            if self.out.commit():  # that complete fragment (or the header) went out: make it durable
                self.out.sync()
                self.frames_in_file = self._fragment_start
                if self.frames_in_file:
                    self.out.publish()


class ArchiveFile(ContainerFile):
    """Raw IR frames, lossless (FFV1, 16 or 8 bits as captured) in Matroska; opened lazily
    on the first frame, when its size and format are known. Each distinct IR frame once."""

    def __init__(self, path: Path):
        self.out = CommittedOutput(path)
        self._last_seq: int | None = None
        self._synced_at = 0.0
        self._t0_ns = 0
        self._last_pts = -1

    def write(self, ir: Frame) -> None:
        import av

        if ir.seq == self._last_seq:
            return  # a slow IR camera's frame reused for several visible frames
        self._last_seq = ir.seq
        fmt = "gray16le" if ir.pixel_format == "gray16" else "gray"
        if self._container is None:
            self._open(ir, fmt)
        frame = av.VideoFrame.from_ndarray(ir.image, format=fmt)
        frame.pts = max(round((ir.t_ns - self._t0_ns) / 1e6), self._last_pts + 1)
        frame.time_base = Fraction(1, 1000)
        self._last_pts = frame.pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        # Matroska writes each frame as it comes: make it durable about once a cluster.
        if self.out.commit() and time.monotonic() - self._synced_at >= ARCHIVE_CLUSTER_MS / 1000:
            self.out.sync()
            self._synced_at = time.monotonic()
        self.frames_muxed += 1
        # Matroska writes a frame when the next one comes (the first commit is the header alone).
        self.frames_in_file = self.frames_muxed - 1
        if self.frames_in_file:
            self.out.publish()

    def _open(self, ir: Frame, fmt: str) -> None:
        import av

        self._container = av.open(self.out, mode="w", format="matroska", options={
            "cluster_time_limit": str(ARCHIVE_CLUSTER_MS), "flush_packets": "1"})
        stream = self._container.add_stream("ffv1", rate=30)
        stream.width, stream.height = ir.size
        stream.pix_fmt = fmt
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = 1  # every frame decodable alone: a cut file loses nothing more
        stream.options = {"level": "3", "slices": "4", "slicecrc": "1"}
        self._stream = stream
        self._t0_ns = ir.t_ns


#: BT.601 in limited ("TV") range, what players assume for standard-definition video: Y in
#: 16..235, chroma in 16..240. FFmpeg's AVColorSpace, AVColorRange, AVColorPrimaries and
#: AVColorTransferCharacteristic codes, written into the stream so players need not guess.
_SMPTE170M, _RANGE_MPEG = 6, 1


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """An HxWx3 BGR uint8 frame (H, W even) as planar YUV 4:2:0 in BT.601 limited range (what
    OpenCV's I420 conversion gives: black is Y 16, white 235), the (H*3/2)xW uint8 layout
    PyAV takes as yuv420p. About 0.06 ms at 640x480, where PyAV's own conversion on the sink
    thread takes ~0.86 ms (../shared/FACTS.md)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)


def _tag_bt601_limited(ctx) -> None:
    ctx.colorspace = _SMPTE170M
    ctx.color_primaries = _SMPTE170M
    ctx.color_trc = _SMPTE170M
    ctx.color_range = _RANGE_MPEG


def output_time_base(fps: Fraction, min_hz: int) -> Fraction:
    """A clock of at least `min_hz` ticks per second in which one frame at `fps` is a whole
    number of ticks, so that a steady camera gives a file of exactly its rate (a 22 fps frame
    is 4090.9 ticks of 90 kHz but exactly 4091 ticks of 90.002 kHz)."""
    fps = Fraction(fps)
    multiple = -(-min_hz // fps.numerator)  # ceiling division
    return Fraction(1, fps.numerator * multiple)
