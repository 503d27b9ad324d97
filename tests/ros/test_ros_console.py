"""The operator's console (postbc/nodes/console.py, postbc/console_web.py): who may reach it (a non-loopback bind
needs a token; requests without it are refused), a stuck browser blocks nothing, and a real headless Chromium driven
by Playwright runs a recording session on the sim through the page (start, stop, label, discard, keys, e-stop,
release, re-arm), checked against the store and the driver's status.

The browser is Debian's chromium-headless-shell (scripts/system_deps.sh installs it; Playwright cannot download its
own here): the browser tests skip, naming the package, where it is missing. Screenshots go to
$POSTBC_CONSOLE_SCREENSHOTS when set (the README's picture), else the test's tmp dir."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from postbc import console_web, runner, topics
from postbc_core.errors import ConfigError
from ros_helpers import wait_for
from std_msgs.msg import Bool

BROWSERS = ("chromium-headless-shell", "chromium")
BROWSER_PKG = "chromium-headless-shell"


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no headless Chromium: install Debian's {BROWSER_PKG} (apt-get install --no-install-recommends "
                f"{BROWSER_PKG}; `make setup` runs scripts/system_deps.sh, which does)")


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright==1.65.0 (requirements/ci.txt)")
    return sync_playwright


def _shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("POSTBC_CONSOLE_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _request(url: str, path: str, method: str = "GET", headers: dict | None = None, body: bytes = b""):
    """(status, headers, body) of one HTTP request (http.client: no cookie jar, no redirects)."""
    host, port = url.split("//")[1].strip("/").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path, body=body or None, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


# -- access ---------------------------------------------------------------------------------------------------------
def test_non_localhost_bind_without_token_is_refused(monkeypatch):
    monkeypatch.delenv(console_web.TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"console_host=0\.0\.0\.0 .*give an access token"):
        runner.build("sim", ["console_host=0.0.0.0", "cameras=[]"])
    with pytest.raises(ConfigError, match=r"console_host=192\.168\.1\.5"):
        runner.build("record_demos", ["console_host=192.168.1.5", "store=x.zarr"])
    # Accepted: a token (parameter or environment), or loopback without one; console:=false leaves the node out.
    assert runner.build("sim", ["console_host=0.0.0.0", "console_token=s3cret"])[-1].name == "console"
    monkeypatch.setenv(console_web.TOKEN_ENV, "from-env")
    runner.build("sim", ["console_host=0.0.0.0"])
    monkeypatch.delenv(console_web.TOKEN_ENV)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.1.1"):
        assert runner.build("sim", [f"console_host={host}"])[-1].parameters["host"] == host
    assert "console" not in [s.name for s in runner.build("sim", ["console=false"])]
    assert [s.name for s in runner.build("sim", [])] == ["robot_driver", "camera_front", "camera_wrist", "console"]


class FakeBackend:
    """What the web app needs from the node, without ROS: records the e-stops and actions it gets."""

    def __init__(self, cameras=("front",), max_hz: float = 30.0):
        self.hub = console_web.FrameHub(cameras, max_hz, 80, to_rgb=lambda a: a)
        self.estops = 0
        self.actions: list[tuple[str, object]] = []

    def snapshot(self) -> dict:
        return {"profile": "test", "frames": dict(self.hub.received)}

    def action(self, name, value):
        self.actions.append((name, value))
        return True, f"did {name}"

    def estop(self):
        self.estops += 1
        return True, "latched"


@pytest.fixture
def served():
    """start(backend, host, token) -> a running ConsoleServer on a free port; stopped after the test."""
    servers = []

    def start(backend, host="127.0.0.1", token=""):
        s = console_web.ConsoleServer(backend, host, 0, token).start()
        servers.append(s)
        wait_for(lambda: _request(s.url, "/api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200, 10,
                 what="the console to answer")
        return s

    yield start
    for s in servers:
        s.stop()


def test_requests_without_the_token_are_refused(served):
    b = FakeBackend()
    s = served(b, token="s3cret")
    act = {"X-Postbc-Console": "1"}
    assert _request(s.url, "/api/state")[0] == 401
    status, headers, body = _request(s.url, "/api/state", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and b"token" in body
    assert _request(s.url, "/api/estop", "POST", headers=act)[0] == 401 and b.estops == 0
    assert _request(s.url, "/stream/front.mjpg")[0] == 401
    assert _request(s.url, "/api/state", headers={"Authorization": "Bearer s3cret"})[0] == 200
    # The page opened with ?token= sets the cookie its own requests then carry.
    status, headers, _ = _request(s.url, "/?token=s3cret")
    assert status == 200 and "postbc_console=s3cret" in headers.get("set-cookie", "")
    assert _request(s.url, "/api/state", headers={"Cookie": "postbc_console=s3cret"})[0] == 200
    assert _request(s.url, "/api/state", headers={"Cookie": "postbc_console=nope"})[0] == 401
    # State changes need the page's header even with the token (another site cannot add it).
    auth = {"Authorization": "Bearer s3cret"}
    assert _request(s.url, "/api/estop", "POST", headers=auth)[0] == 403 and b.estops == 0
    assert _request(s.url, "/api/estop", "POST", headers={**auth, **act})[0] == 200 and b.estops == 1
    status, _, body = _request(s.url, "/api/action/record_label", "POST", headers={**auth, **act},
                               body=b'{"value": true}')
    assert status == 200 and json.loads(body)["ok"] and b.actions == [("record_label", True)]


def test_loopback_console_needs_no_token_but_refuses_other_host_names(served):
    b = FakeBackend()
    s = served(b)
    assert _request(s.url, "/api/state")[0] == 200
    assert b"postbc console" in _request(s.url, "/")[2]
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example.
    assert _request(s.url, "/api/state", headers={"Host": "evil.example:8080"})[0] == 403
    assert _request(s.url, "/api/estop", "POST")[0] == 403 and b.estops == 0  # no page header: another site's form


def test_a_stuck_browser_blocks_nothing(served):
    """A client that requests a camera stream and never reads it: the server keeps serving everyone else, frames
    keep arriving, and nothing is encoded before anyone watches."""
    b = FakeBackend(max_hz=60.0)
    s = served(b)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(4)]  # noise: ~300 kB JPEGs
    stop = threading.Event()

    def camera():
        i = 0
        while not stop.is_set():
            b.hub.put("front", frames[i % 4])
            i += 1
            time.sleep(1 / 60)

    t = threading.Thread(target=camera, daemon=True)
    t.start()
    stuck = None
    try:
        wait_for(lambda: b.hub.received["front"] > 10, 10, what="frames")
        assert b.hub.encodes["front"] == 0  # nobody watches: nothing encoded
        stuck = socket.create_connection(("127.0.0.1", s.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /stream/front.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
        wait_for(lambda: b.hub.encodes["front"] >= 20, 30, what="the stream to fill the stuck client's buffers")
        n = b.hub.received["front"]
        wait_for(lambda: b.hub.received["front"] > n + 10, 10, what="frames to keep arriving")
        for _ in range(3):
            assert _request(s.url, "/api/state")[0] == 200
        assert _request(s.url, "/api/estop", "POST", headers={"X-Postbc-Console": "1"})[0] == 200 and b.estops == 1
        # A second, reading client still gets frames.
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request("GET", "/stream/front.mjpg")
        r = c.getresponse()
        assert r.status == 200 and r.read(64).startswith(b"--" + console_web.BOUNDARY.encode())
        c.close()
    finally:
        if stuck is not None:
            stuck.close()
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive(), "the camera thread is stuck in FrameHub.put"


def test_console_node_sees_the_graph_and_a_stuck_client_does_not_stop_it(graph, served):
    """The node in a real graph: frames and e-stop go through while a client is stuck on its stream."""
    from functools import partial

    from postbc import conversions as cv
    from postbc.node_main import construct
    from postbc.nodes.console import Console
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    node = graph.add(construct(partial(Console, "console", context=graph.context, parameter_overrides=[
        Parameter("port", value=0), Parameter("cameras", value=["front"]), Parameter("stream_hz", value=30.0)])))
    probe = graph.node("probe")
    estops: list[bool] = []
    probe.create_subscription(Bool, topics.ESTOP, lambda m: estops.append(m.data), topics.LATCHED_QOS)
    pub = probe.create_publisher(Image, topics.image_topic("front"), topics.SENSOR_QOS)
    seen = [0]
    probe.create_subscription(Image, topics.image_topic("front"), lambda m: seen.__setitem__(0, seen[0] + 1),
                              topics.SENSOR_QOS)
    img = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    stop = threading.Event()

    def camera():
        while not stop.is_set():
            pub.publish(cv.image_msg(img, time.time()))
            time.sleep(1 / 30)

    t = threading.Thread(target=camera, daemon=True)
    t.start()
    stuck = None
    try:
        url = node.server.url
        # Nobody watches: the console is not even subscribed (frames reach another subscriber, not it).
        wait_for(lambda: seen[0] > 10, 20, what="camera frames on the topic")
        assert node.hub.received["front"] == 0 and node.count_subscribers(topics.image_topic("front")) == 1
        c = http.client.HTTPConnection("127.0.0.1", node.server.port, timeout=20)
        c.request("GET", "/stream/front.mjpg")
        r = c.getresponse()
        head = r.read(200)
        assert r.status == 200 and b"Content-Type: image/jpeg" in head
        c.close()  # the last watcher leaves: unsubscribed again
        wait_for(lambda: node.count_subscribers(topics.image_topic("front")) == 1, 20, what="the unsubscribe")
        stuck = socket.create_connection(("127.0.0.1", node.server.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /stream/front.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: node.hub.encodes["front"] >= 10, 30, what="the stuck client's stream")
        n = node.hub.received["front"]
        wait_for(lambda: node.hub.received["front"] > n + 5, 20, what="frames to keep arriving")
        status, _, body = _request(url, "/api/estop", "POST", headers={"X-Postbc-Console": "1"})
        assert status == 200, body
        wait_for(lambda: estops and estops[-1] is True, 10, what="the latched e-stop")
        state = json.loads(_request(url, "/api/state")[2])
        assert state["frames"]["front"] > n and state["log"][-1]["message"].startswith("E-STOP")
        # A button whose node is not running says so (no hang).
        status, _, body = _request(url, "/api/action/record_start", "POST", headers={"X-Postbc-Console": "1"})
        assert status == 409 and "/recorder/start is not available" in json.loads(body)["message"]
    finally:
        if stuck is not None:
            stuck.close()
        stop.set()
        t.join(timeout=10)


# -- the browser ----------------------------------------------------------------------------------------------------
def test_browser_runs_a_recording_session(ros_context, tmp_path):
    exe = _browser()
    sync_playwright = _playwright()
    from postbc_core.data.store import EpisodeStore

    store = tmp_path / "demos.zarr"
    specs = runner.build("record_demos", [f"store={store}", "image_width=64", "image_height=64", "console_port=0",
                                          "task=lift_cube"])
    assert [s.name for s in specs][-1] == "console"
    with runner.Composition(specs, context=ros_context) as comp, sync_playwright() as pw:
        comp.start()
        rec, driver, console = comp["recorder"], comp["robot_driver"], comp["console"]
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(console.url)
        page.wait_for_function("document.getElementById('rec-state').textContent === 'idle'", timeout=30000)
        # Both camera views show frames (the MJPEG streams decode in the browser).
        page.wait_for_function("['front', 'wrist'].every(c => { const i = document.getElementById('cam-' + c); "
                               "return i && i.naturalWidth === 64; })", timeout=30000)

        def result() -> str:
            return page.locator("#result").inner_text()

        page.click("#btn-record-start")
        wait_for(lambda: rec.status()["recording"], 20, what="recording to start")
        wait_for(lambda: rec.status().get("episode", {}).get("steps", 0) >= 5, 30, what="steps")
        page.wait_for_function("document.getElementById('rec-state').textContent.startsWith('RECORDING')")
        page.wait_for_function("/steps\\s*[1-9]/.test(document.getElementById('rec-table').innerText)")
        page.screenshot(path=str(_shots(tmp_path) / "console_record.png"), full_page=True)
        page.click("#btn-record-stop")
        wait_for(lambda: rec.last_episode and rec.last_episode.get("committed"), 20, what="the commit")
        page.click("#btn-record-success")
        page.wait_for_function("document.getElementById('episodes').innerText.includes('success')", timeout=20000)
        assert "labelled success=True" in result()
        # Enter (the teleop key) starts an episode, the Discard button throws it away.
        page.keyboard.press("Enter")
        wait_for(lambda: rec.status()["recording"], 20, what="Enter to start an episode")
        page.click("#btn-record-discard")
        wait_for(lambda: not rec.status()["recording"] and rec.last_episode["committed"] is False, 20,
                 what="the discard")
        # E-stop: the driver latches; re-arm before release is refused and the page shows why.
        page.click("#btn-estop")
        wait_for(lambda: driver.status()["estop"], 10, what="the driver's e-stop")
        page.wait_for_function("document.getElementById('drv').textContent === 'E-STOP LATCHED'", timeout=20000)
        # The driver's own error line (its /rosout) is on the page.
        page.wait_for_function("document.getElementById('log').innerText.includes('E-STOP latched')", timeout=20000)
        page.click("#btn-rearm")
        page.wait_for_function("document.getElementById('result').textContent.includes('publish false there first')",
                               timeout=20000)
        assert driver.status()["estop"]
        page.click("#btn-release")
        page.wait_for_function("document.getElementById('result').textContent.includes('released')", timeout=20000)
        page.click("#btn-rearm")
        wait_for(lambda: not driver.status()["estop"] and driver.status()["enabled"], 10, what="the re-arm")
        page.wait_for_function("document.getElementById('drv').textContent.startsWith('enabled')", timeout=20000)
        assert "refused" not in page.locator("#log").inner_text()
        browser.close()
    s = EpisodeStore.open(store)
    assert s.n_episodes == 1  # the discarded one is not there
    assert s.episode_meta(0)["success"] is True and s.episode_meta(0)["source"] == "teleop"
    assert len(s.episode(0)["timestamp"]) >= 5


@pytest.mark.slow
def test_browser_shows_a_finetuning_run(ros_context, tmp_path):
    """The finetune profile on the sim: the page follows the manager's status to the end of its budget and draws
    the success curve, one dot per episode (slow: trains a weak policy and runs three episodes)."""
    exe = _browser()
    sync_playwright = _playwright()
    from _policies import weak_lift_policy

    ckpt = weak_lift_policy(tmp_path / "ckpt", steps=60)
    sets = [f"checkpoint={ckpt}", f"finetune_out={tmp_path / 'ft'}", "cameras=[front, wrist]", "image_width=64",
            "image_height=64", "finetune_manager.episodes=3", "finetune_manager.warmup_episodes=1",
            "finetune_manager.max_episode_s=1.2", "finetune_manager.device=cpu", "finetune_manager.utd=2",
            "finetune_manager.torch_threads=1", "console_port=0"]
    with runner.Composition(runner.build("finetune", sets), context=ros_context) as comp, sync_playwright() as pw:
        comp.start()
        mgr = comp["finetune_manager"]
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(comp["console"].url)
        page.wait_for_function("document.getElementById('ft-state').textContent !== '?'", timeout=60000)
        assert page.locator("#sec-recorder").is_hidden() and page.locator("#sec-finetune").is_visible()
        wait_for(lambda: mgr.status()["state"] in ("done", "error"), 240, what="the finetuning budget")
        assert mgr.status()["state"] == "done", mgr.status()
        page.wait_for_function("document.getElementById('ft-state').textContent === 'done'", timeout=20000)
        page.wait_for_function("document.querySelectorAll('#curve circle').length === 3", timeout=20000)
        page.screenshot(path=str(_shots(tmp_path) / "console_finetune.png"), full_page=True)
        browser.close()
