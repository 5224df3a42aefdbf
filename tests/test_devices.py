"""`streamfuse devices`: this machine has no camera, so the V4L2 answers of two cameras (a
PureThermal board with a Lepton and a colour webcam) are played back through the ioctl layer,
in the kernel's struct layouts; the parsing, the listing and the thermal guess are real.
"""
from __future__ import annotations

import errno
import glob
import struct
from pathlib import Path

import pytest
from helpers import streamfuse

from streamfuse.capture import devices
from streamfuse.capture.devices import find_cameras, report, rig_snippet

CAMERAS = {
    # node: (card, driver, bus, capture?, {fourcc: (description, {(w, h): [(num, den), ...]})})
    "video0": ("PureThermal (fw:v1.3.0)", "uvcvideo", "usb-0000:00:14.0-2", True, {
        "Y16 ": ("16-bit Greyscale", {(160, 120): [(1, 9)]}),
        "GREY": ("8-bit Greyscale", {(160, 120): [(1, 9)]}),
    }),
    "video1": ("PureThermal (fw:v1.3.0)", "uvcvideo", "usb-0000:00:14.0-2", False, {}),   # metadata node
    "video2": ("HD Pro Webcam C920", "uvcvideo", "usb-0000:00:14.0-3", True, {
        "YUYV": ("YUYV 4:2:2", {(640, 480): [(1, 30), (1, 15)], (1920, 1080): [(1, 5)]}),
        "MJPG": ("Motion-JPEG", {(1920, 1080): [(1, 30)]}),
    }),
}


class FakeV4l2:
    """Answers VIDIOC_* requests for the files under a fake /dev, like the kernel would."""

    def __init__(self, dev: Path):
        self.fds: dict[int, str] = {}
        self.dev = dev

    def ioctl(self, fd: int, request: int, buf: bytearray) -> None:
        card, driver, bus, capture, formats = CAMERAS[self._node(fd)]
        fourccs = list(formats)
        if request == devices.VIDIOC_QUERYCAP:
            caps = 0x04200001 if capture else 0x04800000   # video capture | streaming, or metadata
            struct.pack_into("16s32s32sIII", buf, 0, driver.encode(), card.encode(), bus.encode(),
                             0x60000, caps | devices.V4L2_CAP_DEVICE_CAPS, caps)
        elif request == devices.VIDIOC_ENUM_FMT:
            index, _ = struct.unpack_from("II", buf)
            if index >= len(fourccs):
                raise OSError(errno.EINVAL, "end")
            fourcc = fourccs[index]
            struct.pack_into("III32sI", buf, 0, index, 1, 0, formats[fourcc][0].encode(),
                             struct.unpack("<I", fourcc.encode())[0])
        elif request == devices.VIDIOC_ENUM_FRAMESIZES:
            index, pixfmt = struct.unpack_from("II", buf)
            sizes = list(formats[struct.pack("<I", pixfmt).decode()][1])
            if index >= len(sizes):
                raise OSError(errno.EINVAL, "end")
            struct.pack_into("III", buf, 8, 1, *sizes[index])
        elif request == devices.VIDIOC_ENUM_FRAMEINTERVALS:
            index, pixfmt, w, h = struct.unpack_from("IIII", buf)
            intervals = formats[struct.pack("<I", pixfmt).decode()][1][(w, h)]
            if index >= len(intervals):
                raise OSError(errno.EINVAL, "end")
            struct.pack_into("III", buf, 16, 1, *intervals[index])
        else:
            raise OSError(errno.ENOTTY, "not a V4L2 request")

    def _node(self, fd: int) -> str:
        return Path(f"/proc/self/fd/{fd}").resolve().name


@pytest.fixture
def fake_dev(tmp_path):
    dev = tmp_path / "dev"
    by_id = dev / "v4l" / "by-id"
    by_id.mkdir(parents=True)
    for node in CAMERAS:
        (dev / node).write_bytes(b"")
    (by_id / "usb-GroupGets_PureThermal_0123-video-index0").symlink_to(dev / "video0")
    (by_id / "usb-046d_HD_Pro_Webcam_C920_ABCD-video-index0").symlink_to(dev / "video2")
    return dev


def test_cameras_their_modes_and_which_look_thermal(fake_dev):
    cams = find_cameras(fake_dev, FakeV4l2(fake_dev).ioctl)
    assert [Path(c.path).name for c in cams] == ["video0", "video2"]   # the metadata node is left out
    lepton, webcam = cams
    assert lepton.name == "PureThermal (fw:v1.3.0)" and lepton.driver == "uvcvideo"
    assert lepton.thermal == "yes" and webcam.thermal == ""
    assert lepton.stable_ids == [str(fake_dev / "v4l/by-id/usb-GroupGets_PureThermal_0123-video-index0")]
    assert [(m.fourcc, dict(m.sizes)) for m in lepton.modes] == [("Y16 ", {(160, 120): [9]}), ("GREY", {(160, 120): [9]})]
    assert webcam.modes[0].sizes == {(640, 480): [30, 15], (1920, 1080): [5]}
    assert rig_snippet(lepton) == (f"{{type: uvc, device: {lepton.stable_ids[0]}, size: [160, 120], fps: 9, "
                                   "pixel_format: gray16}")
    assert rig_snippet(webcam).endswith("size: [1920, 1080], fps: 30, fourcc: MJPG}")
    text = report(cams)
    print(text)
    assert "video0  PureThermal (fw:v1.3.0) (uvcvideo, usb-0000:00:14.0-2)  [thermal]" in text
    assert "  Y16   16-bit Greyscale: 160x120 @ 9 fps" in text
    assert "  YUYV  YUYV 4:2:2: 640x480 @ 30, 15 fps; 1920x1080 @ 5 fps" in text
    assert "[thermal]" not in text.split("video2")[1]


def test_a_device_this_user_may_not_open(fake_dev):
    (fake_dev / "video2").chmod(0)
    cams = find_cameras(fake_dev, FakeV4l2(fake_dev).ioctl)
    if Path(cams[-1].path).name != "video2" or not cams[-1].error:
        pytest.skip("running as root: permissions are not enforced")
    assert "add this user to the `video` group" in cams[-1].error


def test_no_cameras_is_said_plainly(tmp_path):
    assert find_cameras(tmp_path) == []
    assert report([]).startswith("no cameras found")


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="this machine has cameras")
def test_the_command_on_this_machine_without_cameras():
    result = streamfuse("devices")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("no cameras found: this machine has no /dev/video* capture devices")
