"""The operator's console web server: HTTP side only, no ROS here (postbc/nodes/console.py owns the ROS side).

Stack: Starlette (the ASGI toolkit FastAPI is built on; we need routing, streaming responses and middleware, not
FastAPI's pydantic models, so the robot env gets two small pure-Python packages) served by uvicorn on a thread of
its own. The page is one static HTML file with plain JavaScript (postbc/console_page.py): nothing to build.

Never blocking a node: ROS callbacks only drop a reference to the newest message into a latest-value buffer
(`FrameHub.put`, the node's status dict). Everything else happens on the web server's thread and its worker threads:
reading the buffers, converting and JPEG-encoding a camera frame (only while some client streams that camera, at most
`max_hz` per camera however many clients watch, one encode shared by all of them), writing to sockets. A client that
stops reading stalls only its own response (uvicorn's flow control pauses that one coroutine); the buffers never grow.

Access: `check_bind` refuses a non-loopback bind without a token. With a token every request must carry it (the
`Authorization: Bearer` header, the `postbc_console` cookie the page sets, or `?token=` in the page's URL), else 401.
Whatever the bind, state-changing requests (POST) must carry the `X-Postbc-Console` header, which a browser only sends
from the console's own page (another site's form or fetch cannot add it without a CORS preflight that is never
granted), and a loopback bind answers only requests whose Host is a loopback name (DNS-rebinding guard).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qs

from postbc_core.errors import ConfigError

TOKEN_ENV = "POSTBC_CONSOLE_TOKEN"  # where the token comes from when the console_token parameter is empty
COOKIE = "postbc_console"
ACTION_HEADER = "x-postbc-console"  # required on POST (see the module doc)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
BOUNDARY = "postbcframe"


def is_loopback(host: str) -> bool:
    """True for a host name / address that only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def resolve_token(token: str) -> str:
    """The access token: the parameter's, else $POSTBC_CONSOLE_TOKEN (keeps it out of `ps` and launch logs)."""
    return token or os.environ.get(TOKEN_ENV, "")


def check_bind(host: str, port: int, token: str) -> None:
    """ConfigError unless `host`:`port` may be served: a non-loopback host needs an access token (the console
    moves the arm: start, home, e-stop release)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"console_port={port}: give a TCP port 1..65535 (0 = any free port)")
    if not host.strip():
        raise ConfigError("console_host is empty: give 127.0.0.1 (this machine only) or an interface address")
    if not is_loopback(host) and not token:
        raise ConfigError(f"console_host={host} serves the console (episode controls, e-stop release, re-arm) to "
                          f"other machines: give an access token too (console_token:=<secret> or ${TOKEN_ENV}), or "
                          f"keep console_host:=127.0.0.1 and reach it through an SSH tunnel "
                          f"(ssh -L {port or 8080}:127.0.0.1:{port or 8080} robot-pc)")


class FrameHub:
    """Latest frame per camera, put by ROS callbacks (a reference, no work), JPEG-encoded on demand.

    `put(camera, msg)` is all a subscription does. `jpeg(camera)` (web threads) returns (seq, bytes) of the newest
    frame, encoding it only if it is newer than the cached one and the camera's last encode is at least 1/max_hz old;
    several clients of one camera share the encode."""

    def __init__(self, cameras, max_hz: float, quality: int, to_rgb: Callable[[Any], Any], width: int = 0,
                 on_watch: Callable[[str, bool], None] | None = None):
        if max_hz <= 0:
            raise ConfigError(f"stream_hz={max_hz}: give a positive rate (Hz) for the camera views")
        if not 1 <= quality <= 100:
            raise ConfigError(f"jpeg_quality={quality}: give 1..100")
        self.cameras = tuple(cameras)
        self.max_hz = float(max_hz)
        self.quality = int(quality)
        self._to_rgb = to_rgb
        self.width = int(width)  # views wider than this are downscaled before encoding (0 = native size)
        self._on_watch = on_watch or (lambda camera, on: None)
        self.watchers = dict.fromkeys(self.cameras, 0)
        self._watch_lock = threading.Lock()
        self._latest: dict[str, tuple[int, Any]] = {c: (0, None) for c in self.cameras}
        self._cache: dict[str, tuple[int, bytes, float]] = {c: (0, b"", -1e9) for c in self.cameras}
        self._locks = {c: threading.Lock() for c in self.cameras}
        self.received = dict.fromkeys(self.cameras, 0)
        self.encodes = dict.fromkeys(self.cameras, 0)

    def watch(self, camera: str, on: bool) -> None:
        """A client starts (on) / stops watching `camera`: the first one turns the camera's subscription on, the
        last one off (`on_watch`), so no frame is even received while nobody looks."""
        with self._watch_lock:
            n = self.watchers[camera] = self.watchers[camera] + (1 if on else -1)
            if n == (1 if on else 0):
                self._on_watch(camera, on)

    def put(self, camera: str, msg: Any) -> None:
        seq = self._latest[camera][0] + 1  # one writer per camera (its subscription's callback)
        self._latest[camera] = (seq, msg)  # one tuple assignment: readers see the old or the new pair
        self.received[camera] = seq

    def jpeg(self, camera: str) -> tuple[int, bytes] | None:
        seq, msg = self._latest[camera]
        if msg is None:
            return None
        with self._locks[camera]:
            cseq, data, t = self._cache[camera]
            now = time.monotonic()
            if cseq == seq or now - t < 1.0 / self.max_hz:
                return (cseq, data) if data else None
            import cv2

            rgb = self._to_rgb(msg)
            if self.width and rgb.shape[1] > self.width:
                h = max(1, round(rgb.shape[0] * self.width / rgb.shape[1]))
                rgb = cv2.resize(rgb, (self.width, h), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
            if not ok:
                return (cseq, data) if data else None
            self._cache[camera] = (seq, buf.tobytes(), now)
            self.encodes[camera] += 1
            return seq, self._cache[camera][1]


class Backend(Protocol):
    """What the web app needs from the node (postbc.nodes.console.Console implements it)."""

    hub: FrameHub

    def snapshot(self) -> dict: ...

    def action(self, name: str, value: bool | None) -> tuple[bool, str]: ...

    def estop(self) -> tuple[bool, str]: ...


class Guard:
    """ASGI middleware: the token check and the loopback Host / POST header checks of the module doc."""

    def __init__(self, app, token: str, loopback: bool):
        self.app = app
        self.token = token
        self.loopback = loopback

    def _given(self, scope) -> str:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if "cookie" in headers:
            c = SimpleCookie()
            try:
                c.load(headers["cookie"])
            except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
                c = SimpleCookie()
            if COOKIE in c:
                return c[COOKIE].value
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return q.get("token", [""])[0]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.loopback:
            host = headers.get("host", "").rsplit(":", 1)[0] if not headers.get("host", "").startswith("[") \
                else headers["host"].split("]")[0] + "]"
            if host and host.lower() not in LOOPBACK_NAMES:
                return await _plain(send, 403, f"console: Host {host!r} refused: this console is bound to loopback "
                                               "and answers localhost / 127.0.0.1 only")
        if self.token and not hmac.compare_digest(self._given(scope).encode(), self.token.encode()):
            return await _plain(send, 401, "console: access token required: open the page as "
                                           "http://<host>:<port>/?token=<console_token>, or send "
                                           "'Authorization: Bearer <console_token>'",
                                [(b"www-authenticate", b"Bearer")])
        if scope["method"] == "POST" and ACTION_HEADER not in headers:
            return await _plain(send, 403, f"console: POST needs the {ACTION_HEADER} header (the console page sends "
                                           "it; other sites cannot)")
        return await self.app(scope, receive, send)


async def _plain(send, status: int, text: str, extra=()) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


def make_app(backend: Backend, token: str, loopback: bool, stopping: threading.Event):
    """The Starlette app: `/` the page, `/api/state` the status snapshot (JSON), `/api/action/<name>` (POST, body
    {"value": bool} for labels / enable), `/api/estop` (POST), `/stream/<camera>.mjpg` (MJPEG)."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    from postbc.console_page import PAGE

    def page(request: Request):
        resp = HTMLResponse(PAGE)
        if token and request.query_params.get("token"):
            # The page's own requests (state polls, streams, actions) then carry the token as a cookie.
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return resp

    def state(request: Request):
        return JSONResponse(backend.snapshot())

    async def action(request: Request):
        name = request.path_params["name"]
        value = None
        body = await request.body()
        if body:
            try:
                value = json.loads(body).get("value")
            except (ValueError, AttributeError):
                return JSONResponse({"ok": False, "message": f"body {body[:80]!r}: send JSON {{\"value\": true}}"},
                                    status_code=400)
        # Service calls wait for their answer on a worker thread, never on the event loop (streams, e-stop).
        ok, msg = await anyio.to_thread.run_sync(backend.action, name, value)
        return JSONResponse({"ok": ok, "message": msg}, status_code=200 if ok else 409)

    async def estop(request: Request):
        # On the event loop itself, not the worker pool: it works while every worker waits on a slow service.
        ok, msg = backend.estop()
        return JSONResponse({"ok": ok, "message": msg})

    async def stream(request: Request):
        cam = request.path_params["camera"]
        if cam not in backend.hub.cameras:
            return PlainTextResponse(f"no camera {cam!r}; cameras: {list(backend.hub.cameras)}", status_code=404)

        async def frames():
            last = -1
            period = 1.0 / backend.hub.max_hz
            await anyio.to_thread.run_sync(backend.hub.watch, cam, True)
            try:
                while not stopping.is_set():
                    out = await anyio.to_thread.run_sync(backend.hub.jpeg, cam)
                    if out is not None and out[0] != last:
                        last, data = out
                        yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                               .encode() + data + b"\r\n")
                    await anyio.sleep(period)
            finally:  # the client left (or the server stops): the last one turns the camera's subscription off
                backend.hub.watch(cam, False)

        return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    routes = [Route("/", page), Route("/api/state", state), Route("/api/action/{name}", action, methods=["POST"]),
              Route("/api/estop", estop, methods=["POST"]), Route("/stream/{camera}.mjpg", stream)]
    return Guard(Starlette(routes=routes), token, loopback)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); ConfigError naming the address and the fix."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise ConfigError(f"console cannot listen on {host}:{port} ({e.strerror or e}): another console or web "
                          "server uses the port; give console_port:=<another port>, or console:=false") from None
    sock.setblocking(False)
    return sock


class ConsoleServer:
    """uvicorn serving `make_app` on its own thread; the socket is bound in __init__ so a bad address fails there."""

    def __init__(self, backend: Backend, host: str, port: int, token: str, nice: int = 10):
        try:
            import uvicorn  # noqa: F401
            import starlette  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"the console needs starlette and uvicorn ({e}): pip install 'postbc_core[console]' "
                              "(requirements/robot-constraints.txt pins them), or leave the console out with "
                              "console:=false") from None
        check_bind(host, port, token)
        self.stopping = threading.Event()
        self.sock = bind(host, port)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.token = token
        self.nice = int(nice)
        self.app = make_app(backend, token, is_loopback(host), self.stopping)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        h = f"[{self.host.strip('[]')}]" if ":" in self.host.strip("[]") else self.host
        return f"http://{h}:{self.port}/"

    def start(self) -> ConsoleServer:
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        # uvicorn installs signal handlers only on the main thread: here the node's own handlers stay in charge.
        self._thread = threading.Thread(target=self._run, name="postbc_console_web", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        if self.nice:
            # Linux schedules threads as tasks: this one, and the worker threads it starts (they inherit it), yield
            # the CPU to the control threads of the same process when the machine is busy.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):
                pass  # not Linux / not permitted: runs at the process's priority
        self._server.run(sockets=[self.sock])

    def stop(self) -> None:
        self.stopping.set()  # ends the camera streams at their next frame
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.sock.close()
