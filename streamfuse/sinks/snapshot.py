"""Snapshots: the picture as shown, the raw IR frame it was made from, and its temperatures.

A snapshot of a fused frame is a few files sharing one name, `streamfuse-YYYYmmdd-HHMMSS-mmm`
(the local wall-clock time the visible frame was captured):

    NAME.png          the picture as the viewer shows it (temperature overlay included)
    NAME.ir.png       the raw IR frame, before AGC and registration: 16-bit PNG (8-bit for a
                      gray8 camera) holding the exact counts, in the IR camera's pixels
    NAME.json         capture times (pipeline clock and wall clock), frame numbers, sizes,
                      the radiometric mapping and the scene's min/max/spot
    NAME.celsius.csv  radiometric rigs only: the IR frame's temperatures in Celsius, one row of
                      the IR frame per line, 0.01 resolution, empty where there is no data

The display window writes them into its working folder (`s`); the monitor sends them as one
ZIP (`/snapshot.zip`), so that all of them come from the same frame.
"""
from __future__ import annotations

import dataclasses
import io
import json
import time
import zipfile
from datetime import datetime

import cv2
import numpy as np

from streamfuse.frames import Frame, now_ns
from streamfuse.radiometry import RadiometryConfig, celsius_from_counts


def wall_ns(t_ns: int) -> int:
    """A pipeline-clock time as wall-clock nanoseconds since the epoch."""
    return time.time_ns() - (now_ns() - t_ns)


def snapshot_name(frame: Frame) -> str:
    """`streamfuse-YYYYmmdd-HHMMSS-mmm`, the local time the frame was captured."""
    when = datetime.fromtimestamp(wall_ns(frame.t_ns) / 1e9)
    return f"streamfuse-{when:%Y%m%d-%H%M%S}-{when.microsecond // 1000:03d}"


def snapshot_files(frame: Frame, picture: np.ndarray, radiometry: RadiometryConfig | None) -> dict[str, bytes]:
    """The snapshot of `frame` as {file suffix: bytes}: ".png", and with the frame's pair
    ".ir.png" and ".json", and with radiometry ".celsius.csv" (see the module docstring)."""
    ok, png = cv2.imencode(".png", picture)
    if not ok:
        raise ValueError("snapshot: the picture could not be encoded as PNG")
    files = {".png": png.tobytes()}
    pair = frame.pair
    if pair is None:  # a camera shown alone while the other is lost: no pair to keep
        return files
    ok, raw = cv2.imencode(".png", pair.ir.image)
    if not ok:
        raise ValueError("snapshot: the IR frame could not be encoded as PNG")
    files[".ir.png"] = raw.tobytes()
    files[".json"] = json.dumps(_sidecar(frame, radiometry), indent=1).encode()
    if radiometry is not None:
        files[".celsius.csv"] = celsius_csv(pair.ir.image, radiometry)
    return files


def celsius_csv(counts: np.ndarray, radiometry: RadiometryConfig) -> bytes:
    """The temperatures of `counts` as CSV text (about 80 ms for 640x512)."""
    out = io.BytesIO()
    np.savetxt(out, celsius_from_counts(counts, radiometry), fmt="%.2f", delimiter=",")
    return out.getvalue().replace(b"nan", b"")


def _sidecar(frame: Frame, radiometry: RadiometryConfig | None) -> dict:
    def camera(f: Frame) -> dict:
        return {"seq": f.seq, "t_ns": f.t_ns, "captured_at": datetime.fromtimestamp(wall_ns(f.t_ns) / 1e9).isoformat(
            timespec="milliseconds"), "size": list(f.size), "pixel_format": f.pixel_format}

    temperatures = frame.temperatures
    return {"fused": {"seq": frame.seq, "t_ns": frame.t_ns}, "ir": camera(frame.pair.ir), "vis": camera(frame.pair.vis),
            "clock": "t_ns: CLOCK_MONOTONIC nanoseconds of the pipeline; captured_at: local wall clock",
            "radiometry": None if radiometry is None else dataclasses.asdict(radiometry),
            "temperatures": None if temperatures is None else temperatures.as_dict()}


def zip_files(name: str, files: dict[str, bytes]) -> bytes:
    """`files` (suffix -> bytes) as a ZIP of NAME+suffix entries (PNGs stored, text deflated)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for suffix, data in files.items():
            method = zipfile.ZIP_STORED if suffix.endswith(".png") else zipfile.ZIP_DEFLATED
            z.writestr(name + suffix, data, compress_type=method)
    return out.getvalue()
