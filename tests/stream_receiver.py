"""A receiver for the stream sink's tests, run as its own process (as another program would be).

    python tests/stream_receiver.py URL

Listens (RTSP: FFmpeg's RTSP demuxer as a server a publisher records to, `rtsp_flags
listen`) or reads (udp://, rtp://), decodes every frame and prints one JSON line per frame:
the monotonic clock when it was decoded (`t`, ns; the pipeline clock, shared by processes)
and the frame number drawn in the picture by `code_image` (`code`). It prints `{"ready": 1}`
once it listens, and exits when the stream ends or it is killed.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

BITS, BLOCK = 12, 16


def code_image(i: int, size=(320, 240)) -> np.ndarray:
    """A BGR picture with frame number `i` drawn as 12 black/white blocks along the top."""
    w, h = size
    image = np.full((h, w, 3), 90, np.uint8)
    image[BLOCK:, :] = (i * 7 % 200, 60, 120)
    for bit in range(BITS):
        image[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255 if (i >> bit) & 1 else 0
    return image


def read_code(gray: np.ndarray) -> int:
    blocks = gray[4:BLOCK - 4].reshape(BLOCK - 8, -1)[:, :BITS * BLOCK]
    means = blocks.reshape(BLOCK - 8, BITS, BLOCK)[:, :, 4:BLOCK - 4].mean(axis=(0, 2))
    return int(sum(1 << bit for bit, m in enumerate(means) if m > 128))


def main(url: str) -> None:
    import av

    if url.startswith("rtsp"):
        options = {"rtsp_flags": "listen", "listen_timeout": "30"}
    else:
        options = {"fflags": "nobuffer", "flags": "low_delay", "overrun_nonfatal": "1", "timeout": "30000000"}
    print(json.dumps({"ready": 1}), flush=True)
    container = av.open(url, options=options | {"probesize": "32768", "analyzeduration": "100000"})
    stream = container.streams.video[0]
    stream.thread_count = 1  # frame threads would hold frames back: measure the stream, not the decoder
    for frame in container.decode(stream):
        t = time.monotonic_ns()
        print(json.dumps({"t": t, "code": read_code(frame.to_ndarray(format="gray")),
                          "size": [frame.width, frame.height]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
