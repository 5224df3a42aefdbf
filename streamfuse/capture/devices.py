"""`streamfuse devices`: the cameras on this machine, what they offer, and which look thermal.

Each /dev/video* node is asked through V4L2 ioctls (no extra tools, nothing opened for
streaming): its name, driver and bus, and for every pixel format its frame sizes and rates.
Nodes that cannot capture video (the metadata node a UVC camera adds beside its video node)
are left out. A camera looks thermal when it offers a 16-bit (or 12/14-bit) grey format such
as a FLIR Boson's or a PureThermal's Y16, or its name says FLIR, Boson, Lepton, PureThermal,
Seek, ...; one offering only 8-bit grey may be thermal. Stable ids come from /dev/v4l/by-id.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

# ioctl request numbers: _IOR/_IOWR('V', nr, struct) from linux/videodev2.h.
VIDIOC_QUERYCAP = 0x80685600          # struct v4l2_capability, 104 bytes
VIDIOC_ENUM_FMT = 0xC0405602          # struct v4l2_fmtdesc, 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A   # struct v4l2_frmsizeenum, 44 bytes
VIDIOC_ENUM_FRAMEINTERVALS = 0xC034564B  # struct v4l2_frmivalenum, 52 bytes
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_DEVICE_CAPS = 0x80000000
_DISCRETE = 1

#: FOURCCs of raw thermal counts (Boson RAW16 and PureThermal/Lepton are Y16).
THERMAL_FORMATS = {"Y16 ", "Y12 ", "Y14 ", "Y10 ", "Y16I"}
GREY8_FORMATS = {"GREY", "Y8  ", "Y800"}
THERMAL_NAMES = ("flir", "boson", "lepton", "purethermal", "thermal", "seek", "infiray", "hikmicro",
                 "topdon", "optris", "tau2", "xtherm")
#: Frame sizes and intervals listed per format at most (stepwise ranges are summarised).
_MAX_ENTRIES = 64

Ioctl = Callable[[int, int, bytearray], None]


@dataclass
class Mode:
    fourcc: str
    description: str
    sizes: dict[tuple[int, int], list[Fraction]] = field(default_factory=dict)  # (w, h) -> fps


@dataclass
class Camera:
    path: str
    name: str = ""
    driver: str = ""
    bus: str = ""
    stable_ids: list[str] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)
    error: str = ""

    @property
    def thermal(self) -> str:
        """'yes', 'maybe' or '' (no)."""
        formats = {m.fourcc for m in self.modes}
        if formats & THERMAL_FORMATS or any(n in self.name.lower() for n in THERMAL_NAMES):
            return "yes"
        return "maybe" if formats and formats <= GREY8_FORMATS else ""


def find_cameras(dev: Path = Path("/dev"), ioctl: Ioctl | None = None) -> list[Camera]:
    """The video-capture devices under `dev`, each described (or with `error` set)."""
    ioctl = ioctl or _ioctl
    by_id: dict[str, list[str]] = {}
    id_dir = dev / "v4l" / "by-id"
    if id_dir.is_dir():
        for link in sorted(id_dir.iterdir()):
            by_id.setdefault(os.path.realpath(link), []).append(str(link))
    nodes = sorted(dev.glob("video[0-9]*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0)
    cameras = []
    for node in nodes:
        camera = describe(node, ioctl)
        if camera is not None:
            camera.stable_ids = by_id.get(os.path.realpath(node), [])
            cameras.append(camera)
    return cameras


def describe(node: Path, ioctl: Ioctl) -> Camera | None:
    """One device node; None if it is not a video-capture node."""
    camera = Camera(str(node))
    try:
        fd = os.open(node, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        camera.error = f"cannot open it ({exc.strerror}); " + (
            "add this user to the `video` group" if exc.errno in (errno.EACCES, errno.EPERM) else "is it in use?")
        return camera
    try:
        cap = bytearray(104)
        ioctl(fd, VIDIOC_QUERYCAP, cap)
        driver, card, bus, _, caps, device_caps = struct.unpack_from("16s32s32sIII", cap)
        if caps & V4L2_CAP_DEVICE_CAPS:
            caps = device_caps
        if not caps & V4L2_CAP_VIDEO_CAPTURE:
            return None
        camera.driver, camera.name, camera.bus = (_text(b) for b in (driver, card, bus))
        camera.modes = list(_formats(fd, ioctl))
    except OSError as exc:
        camera.error = f"does not answer V4L2 queries ({exc.strerror or exc})"
    finally:
        os.close(fd)
    return camera


def _formats(fd: int, ioctl: Ioctl):
    for index in range(_MAX_ENTRIES):
        desc = bytearray(64)
        struct.pack_into("II", desc, 0, index, V4L2_BUF_TYPE_VIDEO_CAPTURE)
        if not _ask(ioctl, fd, VIDIOC_ENUM_FMT, desc):
            return
        _, _, _, description, pixfmt = struct.unpack_from("III32sI", desc)
        mode = Mode(struct.pack("<I", pixfmt).decode("latin-1"), _text(description))
        for size in _sizes(fd, ioctl, pixfmt):
            mode.sizes[size] = _rates(fd, ioctl, pixfmt, size)
        yield mode


def _sizes(fd: int, ioctl: Ioctl, pixfmt: int) -> list[tuple[int, int]]:
    sizes = []
    for index in range(_MAX_ENTRIES):
        buf = bytearray(44)
        struct.pack_into("II", buf, 0, index, pixfmt)
        if not _ask(ioctl, fd, VIDIOC_ENUM_FRAMESIZES, buf):
            break
        kind, *values = struct.unpack_from("8I", buf, 8)[:7]
        if kind == _DISCRETE:
            sizes.append((values[0], values[1]))
        else:  # continuous or stepwise: its smallest and largest size
            sizes += [(values[0], values[3]), (values[1], values[4])]
            break
    return sizes


def _rates(fd: int, ioctl: Ioctl, pixfmt: int, size: tuple[int, int]) -> list[Fraction]:
    rates = []
    for index in range(_MAX_ENTRIES):
        buf = bytearray(52)
        struct.pack_into("IIII", buf, 0, index, pixfmt, *size)
        if not _ask(ioctl, fd, VIDIOC_ENUM_FRAMEINTERVALS, buf):
            break
        kind, num, den, num2, den2 = struct.unpack_from("5I", buf, 16)
        if kind != _DISCRETE:  # a range of intervals: the fastest and slowest rate
            rates += [Fraction(den, num) for num, den in ((num, den), (num2, den2)) if num]
            break
        if num:
            rates.append(Fraction(den, num))
    return sorted(set(rates), reverse=True)


def _ask(ioctl: Ioctl, fd: int, request: int, buf: bytearray) -> bool:
    """One enumeration step; False at the end of the list (EINVAL)."""
    try:
        ioctl(fd, request, buf)
        return True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise


def _ioctl(fd: int, request: int, buf: bytearray) -> None:
    fcntl.ioctl(fd, request, buf, True)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def report(cameras: list[Camera]) -> str:
    """The text `streamfuse devices` prints."""
    if not cameras:
        return ("no cameras found: this machine has no /dev/video* capture devices. Plug a camera in and "
                "check `dmesg`; network cameras are not listed (give their URL in a rig, see rigs/rtsp.yaml)")
    lines = []
    for cam in cameras:
        tag = {"yes": "  [thermal]", "maybe": "  [grey only: thermal?]"}.get(cam.thermal, "")
        lines.append(f"{cam.path}  {cam.name or '?'}" + (f" ({cam.driver}, {cam.bus})" if cam.driver else "") + tag)
        if cam.error:
            lines.append(f"  {cam.error}")
        for stable in cam.stable_ids:
            lines.append(f"  stable id: {stable}")
        for mode in cam.modes:
            sizes = "; ".join(f"{w}x{h} @ {', '.join(_rate(r) for r in rates) or '?'} fps"
                              for (w, h), rates in mode.sizes.items())
            lines.append(f"  {mode.fourcc.strip():<5} {mode.description}: {sizes or 'sizes not listed'}")
        if rig_snippet(cam):
            lines.append(f"  rig: {rig_snippet(cam)}")
    return "\n".join(lines)


def rig_snippet(cam: Camera) -> str:
    """A `sources.ir`/`sources.vis` entry for the camera's best mode, to paste into a rig: its
    16-bit thermal mode if it has one, else the largest size offered at 25 fps or more."""
    thermal = [m for m in cam.modes if m.fourcc in THERMAL_FORMATS]
    options = [(m, size, max(rates, default=0)) for m in (thermal or cam.modes) for size, rates in m.sizes.items()]
    if not options:
        return ""
    mode, (w, h), rate = max(options, key=lambda o: (o[2] >= 25, o[1][0] * o[1][1], o[2]))
    extra = ", pixel_format: gray16" if thermal else f", fourcc: {mode.fourcc.strip()}" if mode.fourcc != "YUYV" else ""
    fps = f", fps: {_rate(rate)}" if rate else ""
    return f"{{type: uvc, device: {(cam.stable_ids or [cam.path])[0]}, size: [{w}, {h}]{fps}{extra}}}"


def _rate(rate: Fraction) -> str:
    return f"{float(rate):.3g}"
