"""Headless Debian Chromium for the web-page tests, driven over the DevTools protocol on a pipe."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import subprocess
import tempfile
import time

from helpers import need_program


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (no port, no extra package)."""

    def __init__(self):
        binary = need_program("chromium")
        self._profile = tempfile.TemporaryDirectory(prefix="streamfuse-chromium-")
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,800", f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
                "about:blank"]
        # The protocol pipe must be the browser's fds 3 and 4.
        self.proc = subprocess.Popen(["bash", "-c", f"exec {shlex.join(args)} 3<&{to_browser} 4>&{from_browser}"],
                                     pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                assert chunk, "chromium closed the protocol pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer["error"]
                return answer["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 15.0):
        """The value of `expression` once it is truthy (an exception counts as not yet)."""
        deadline = time.monotonic() + timeout
        while not (value := self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()")):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError, AssertionError):
            self.call("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._out)
        os.close(self._in)
        self._profile.cleanup()

    def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates (x, y)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)
