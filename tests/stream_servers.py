"""Network cameras served on 127.0.0.1 by the tests themselves, each in a thread it stops.

- `MjpegServer`: MJPEG over HTTP (multipart/x-mixed-replace), like most IP cameras' /video.
- `TcpStreamer`: a PyAV-muxed stream (NUT with FFV1, so 16-bit frames travel losslessly)
  sent to whoever connects to a TCP port.
- `UdpStreamer`: MPEG-TS over UDP to a port, as an encoder box or `ffmpeg -f mpegts udp://` does.

Every server sends `frame(i)` for i = 0, 1, 2, ... at `fps`, counting from when it starts
(or a client connects), and can be stopped and started again on the same port to simulate
a camera that dies and comes back.
"""
from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from fractions import Fraction
from typing import Callable

import cv2
import numpy as np

Frames = Callable[[int], np.ndarray]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Paced:
    """Calls `send(i)` for i = 0, 1, ... at `fps` on a thread until stopped or send fails."""

    def __init__(self, fps: float):
        self.fps = fps
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self, send: Callable[[int], None]) -> None:
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            send(i)
            self.sent = i = i + 1
            self._stop.wait(max(0.0, t0 + i / self.fps - time.monotonic()))

    def _start_thread(self, target) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=target, daemon=True, name=type(self).__name__)
        self._thread.start()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            assert not self._thread.is_alive(), f"{type(self).__name__} thread did not stop"
            self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class MjpegServer(_Paced):
    """MJPEG over HTTP at http://127.0.0.1:PORT/video; `frame(i)` gives BGR or grey uint8."""

    def __init__(self, frame: Frames, fps: float = 30.0, port: int | None = None):
        super().__init__(fps)
        self.frame = frame
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/video"
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        paced = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    paced._loop(self._send)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, i: int) -> None:
                ok, jpeg = cv2.imencode(".jpg", paced.frame(i), [cv2.IMWRITE_JPEG_QUALITY, 95])
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg.tobytes() + b"\r\n")

            def log_message(self, *args):
                pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="MjpegServer")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()   # ends the handlers' send loops
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._join()


class _SocketFile:
    """The write end PyAV muxes into: a connected socket."""

    def __init__(self, conn: socket.socket):
        self.conn = conn

    def write(self, data) -> int:
        self.conn.sendall(data)
        return len(data)


def _encode_loop(paced: _Paced, out, frame: Frames, codec: str, pix_fmt: str, in_fmt: str) -> None:
    """Mux `frame(i)` into the open container `out` at `paced.fps` until stopped or broken."""
    import av

    first = frame(0)
    stream = out.add_stream(codec, rate=Fraction(paced.fps).limit_denominator(1001))
    stream.width, stream.height = first.shape[1], first.shape[0]
    stream.pix_fmt = pix_fmt
    stream.codec_context.gop_size = 1 if codec == "ffv1" else 5   # a new viewer can start soon
    stream.codec_context.max_b_frames = 0
    if codec == "libx264":   # as a camera does: no delay, parameter sets with every keyframe
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "repeat-headers=1"}
    time_base = Fraction(1, 90_000)

    def send(i: int) -> None:
        video = av.VideoFrame.from_ndarray(frame(i), format=in_fmt)
        video.pts, video.time_base = round(i / paced.fps / time_base), time_base
        for packet in stream.encode(video):
            out.mux(packet)

    try:
        paced._loop(send)
    except (OSError, av.FFmpegError):
        pass   # the viewer went away
    finally:
        try:
            out.close()
        except (OSError, av.FFmpegError):
            pass


class TcpStreamer(_Paced):
    """NUT/FFV1 to the first client of tcp://127.0.0.1:PORT; 16-bit grey frames stay exact."""

    def __init__(self, frame: Frames, fps: float = 30.0, pix_fmt: str = "gray16le", port: int | None = None):
        super().__init__(fps)
        self.frame, self.pix_fmt = frame, pix_fmt
        self.port = port or free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._start_thread(self._serve)

    def _serve(self) -> None:
        import av

        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                out = av.open(_SocketFile(conn), "w", format="nut")
                _encode_loop(self, out, self.frame, "ffv1", self.pix_fmt, self.pix_fmt)

    def stop(self) -> None:
        self._stop.set()
        self._join()
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class UdpStreamer(_Paced):
    """MPEG-TS (MPEG-2 video, 8-bit) sent to udp://127.0.0.1:PORT, where the source listens."""

    def __init__(self, frame: Frames, fps: float = 30.0, port: int | None = None):
        super().__init__(fps)
        self.frame = frame
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.url = f"udp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._start_thread(self._serve)

    def _serve(self) -> None:
        import av

        out = av.open(f"{self.url}?pkt_size=1316", "w", format="mpegts",
                      options={"mpegts_flags": "resend_headers"})
        in_fmt = "gray" if self.frame(0).ndim == 2 else "bgr24"
        _encode_loop(self, out, self.frame, "mpeg2video", "yuv420p", in_fmt)

    def stop(self) -> None:
        self._join()


class RtspServer(_Paced):
    """A minimal RTSP server at rtsp://127.0.0.1:PORT/stream: H.264 over RTP (payload type 96),
    to each client over its RTSP connection (TCP interleaved) or to its UDP ports, whichever
    the client asks for in SETUP. PyAV's RTP muxer packetizes; this class speaks RTSP and
    relays the packets."""

    def __init__(self, frame: Frames, fps: float = 30.0, port: int | None = None):
        super().__init__(fps)
        self.frame = frame
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/stream"
        self.transports: list[str] = []   # what each client's SETUP asked for
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._start_thread(self._accept)

    def stop(self) -> None:
        self._stop.set()
        self._join()
        for t in self._threads:
            t.join(5)
        self._threads = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._session, args=(conn,), daemon=True, name="RtspSession")
            t.start()
            self._threads.append(t)

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer, relay = b"", None
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    relay = self._answer(conn, head.decode("latin-1"), relay)
        except OSError:
            pass
        finally:
            if relay is not None:
                relay.stop()
            conn.close()

    def _answer(self, conn: socket.socket, request: str, relay):
        lines = request.split("\r\n")
        method = lines[0].split(" ")[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        reply = [f"CSeq: {headers.get('cseq', '0')}"]
        body = b""
        if method == "OPTIONS":
            reply.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            body = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=streamfuse test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
                    b"a=control:track0\r\n")
            reply += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
        elif method == "SETUP":
            transport = headers["transport"]
            self.transports.append(transport)
            relay = _RtpRelay(self, conn, transport)
            reply += [f"Transport: {relay.transport}", "Session: 12345678;timeout=60"]
        elif method == "PLAY":
            reply.append("Session: 12345678")
        head = "RTSP/1.0 200 OK\r\n" + "".join(r + "\r\n" for r in reply)
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        conn.sendall(head.encode() + b"\r\n" + body)
        if method == "PLAY" and relay is not None:
            relay.start()
        if method == "TEARDOWN" and relay is not None:
            relay.stop()
            relay = None
        return relay


class _RtpRelay(_Paced):
    """Encodes frames with PyAV's RTP muxer to a local UDP socket and forwards each packet to
    the RTSP client: interleaved on its TCP connection ($, channel, length) or by UDP."""

    def __init__(self, server: RtspServer, conn: socket.socket, transport: str):
        super().__init__(server.fps)
        self.server, self.conn = server, conn
        self.interleaved = "TCP" in transport.upper()
        if self.interleaved:
            self.transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
        else:
            client = transport.split("client_port=")[1].split(";")[0]
            self.client_rtp = int(client.split("-")[0])
            self.transport = f"RTP/AVP;unicast;client_port={client};server_port=6970-6971"
        self.inbox = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inbox.bind(("127.0.0.1", 0))
        self.inbox.settimeout(0.2)
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def start(self) -> None:
        self._start_thread(self._encode)
        self._forwarder = threading.Thread(target=self._forward, daemon=True, name="RtpForward")
        self._forwarder.start()

    def stop(self) -> None:
        self._join()
        self._forwarder.join(5)
        self.inbox.close()
        self.out.close()

    def _encode(self) -> None:
        import av

        port = self.inbox.getsockname()[1]
        out = av.open(f"rtp://127.0.0.1:{port}?pkt_size=1400", "w", format="rtp")
        in_fmt = "gray" if self.server.frame(0).ndim == 2 else "bgr24"
        _encode_loop(self, out, self.server.frame, "libx264", "yuv420p", in_fmt)

    def _forward(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.inbox.recv(65536)
            except (TimeoutError, OSError):
                continue
            try:
                if self.interleaved:
                    self.conn.sendall(b"$\x00" + len(packet).to_bytes(2, "big") + packet)
                else:
                    self.out.sendto(packet, ("127.0.0.1", self.client_rtp))
            except OSError:
                return
