"""Open a page in headless Chromium and say what a reader would see: a test helper that drives the
browser over the Chrome DevTools Protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended
by a NUL byte on file descriptors 3 and 4), so it needs nothing but the browser (Debian's
`chromium` package) and the standard library.

    with Chromium() as browser:
        seen = browser.open("file:///tmp/report.html", width=390, height=844, mobile=True)
    seen["images"], seen["errors"], seen["requests"], seen["screenshot"]   # PNG bytes

The browser runs with the network emulated offline and, where `unshare -rn` works, inside a
network namespace with no network at all.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """$LEARNLOCK_CHROMIUM, else the first Chromium on PATH, else None."""
    given = os.environ.get("LEARNLOCK_CHROMIUM")
    if given:
        return given if shutil.which(given) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def no_network_prefix() -> list[str]:
    """`unshare -rn` (a private network namespace: no network) where this machine allows it."""
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ["unshare", "-rn"] if ok else []


class BrowserError(RuntimeError):
    pass


class Chromium:
    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no chromium found")
        self.timeout = timeout
        self.events: list[dict] = []
        self._id = 0
        self._buf = b""

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="learnlock-chromium-")
        to_child_r, self._to_child = os.pipe()     # the browser reads commands on fd 3
        self._from_child, from_child_w = os.pipe()  # and writes replies and events on fd 4
        self.wrapped = no_network_prefix()
        args = [*self.wrapped, self.executable, "--headless=new", "--remote-debugging-pipe", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(len(self.wrapped) + 1, "--no-sandbox")  # Chromium's sandbox refuses to run as root

        def at_3_and_4():  # in the child: the two pipe ends where the protocol expects them
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, pass_fds=(3, 4), preexec_fn=at_3_and_4)
        os.close(to_child_r)
        os.close(from_child_w)
        self.call("Browser.getVersion")  # the browser is up
        return self

    def __exit__(self, *exc):
        try:
            self.call("Browser.close", timeout=10)
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            os.close(fd)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ---- the protocol ---------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise BrowserError("the browser did not answer in time")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
                raise BrowserError(f"the browser closed the pipe (exit {self.proc.poll()}): {err}")
            self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    # ---- what a reader sees ---------------------------------------------------------------
    def open(self, url: str, width: int, height: int, mobile: bool = False) -> dict:
        """Load `url` offline in a fresh tab of `width` x `height` CSS pixels; returns
        {"images": [{"src", "complete", "naturalWidth"}], "errors": [console errors and exceptions],
        "requests": [every URL the page asked for], "scroll_width", "inner_width", "screenshot": PNG bytes
        of the whole page}."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=s)
        self.call("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1}, session=s)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": mobile}, session=s)
        self.call("Page.navigate", {"url": url}, session=s)
        self.wait_for("Page.loadEventFired", s)
        found = self.call("Runtime.evaluate", {"expression": """JSON.stringify({
            images: Array.from(document.images).map(i => ({src: i.src.slice(0, 48), complete: i.complete,
                                                           naturalWidth: i.naturalWidth})),
            scroll_width: document.documentElement.scrollWidth, inner_width: window.innerWidth,
            height: document.documentElement.scrollHeight})""", "returnByValue": True}, session=s)
        seen = json.loads(found["result"]["value"])
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": width, "height": min(seen["height"], 16000), "scale": 1}}, session=s)
        errors, requests = [], []
        for e in self.events:
            if e.get("sessionId") != s:
                continue
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                errors.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif e["method"] == "Network.requestWillBeSent":
                requests.append(p["request"]["url"][:80])
        self.call("Target.closeTarget", {"targetId": target})
        return {**seen, "errors": errors, "requests": requests, "screenshot": base64.b64decode(shot["data"])}
