"""TrajectoryExecutor (the robot_driver's scheduling and holds) on a SimRobot, without ROS: sim time is advanced by
the test, so every assertion is in robot time and none depends on the machine's speed."""

import threading

import numpy as np
import pytest
from postbc_core.robots import kinematics
from postbc_core.robots.controller import ExecutorConfig, TrajectoryExecutor, interpolate

HOME = kinematics.HOME_QPOS
DT = 0.1  # s, control period (10 Hz)


class Rig:
    """A SimRobot whose physics the test steps: `run(seconds)` = executor step + one control period of physics."""

    def __init__(self, **cfg):
        from postbc_core.robots.sim_robot import SimRobot
        from postbc_core.sim import make

        self.robot = SimRobot(make("lift_cube", action_mode="joint", control_hz=1 / DT), step_on_send=False)
        self.robot.connect()
        self.logs: list[tuple[str, str]] = []
        self.ex = TrajectoryExecutor(self.robot, ExecutorConfig(**cfg), log=lambda s, t: self.logs.append((s, t)))
        self.t = 0.0

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / DT)):
            with self.ex.lock:
                self.ex.step(self.t)
                self.robot.sim.step_physics(self.robot.sim.n_substeps)
                self.t += DT

    def q(self) -> np.ndarray:
        return self.robot.measure().joint_pos

    def logged(self, text: str) -> list[str]:
        return [t for _, t in self.logs if text in t]


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.robot.close()


def _ticks(rig, n):
    """Run n control periods; per tick: (tick time, status) right after the executor's step."""
    out = []
    for _ in range(n):
        t = rig.t
        rig.run(DT)
        out.append((t, rig.ex.status()))
    return out


def test_multi_point_trajectory_sampled_between_points(rig):
    """joint_trajectory_controller's sampling: each tick's target is the trajectory at that time, interpolated
    linearly (positions only) from the command in force toward the first point, then between points; the last
    point is held. Every step here is inside the speed limit, so the sent target is the sampled one."""
    rig.run(0.5)
    t_s, q_s = rig.t - DT, rig.q()  # the command in force: nothing sent yet, so the measured joints, last tick
    now = rig.t
    q = np.tile(HOME, (3, 1))
    q[:, 0] = [0.1, 0.2, 0.4]
    times = np.array([0.4, 0.8, 1.2])
    assert rig.ex.submit(q, [0.03, 0.02, 0.02], times, stamp=0.0, now=now)  # zero stamp: points at now + times
    knots_t = np.r_[t_s, now + times]
    knots_w, knots_g = np.r_[q_s[0], q[:, 0]], np.r_[0.037, 0.03, 0.02, 0.02]
    ticks = _ticks(rig, 16)
    for t, st in ticks:
        want = np.interp(t, knots_t, knots_w)
        assert st["mode"] == "traj"
        assert st["target"][0] == pytest.approx(want, abs=2e-5), (t - now, st["target"][0], want)
        assert st["sampled_target"][0] == pytest.approx(want, abs=2e-5)
        assert st["gripper_target"] == pytest.approx(np.interp(t, knots_t, knots_g), abs=1e-9)
        assert np.allclose(st["target"][1:], HOME[1:], atol=2e-3)
    w = [st["target"][0] for _, st in ticks]
    # strictly between the points (not held until due, not early) and the last point held after its time
    assert 0.0 < w[0] < w[1] < w[2] < w[3] < 0.1 and 0.1 < w[5] < w[7] < 0.2 < w[9] < w[11] < 0.4
    assert w[12:] == pytest.approx([0.4] * 4, abs=1e-6)
    assert rig.q()[0] == pytest.approx(0.4, abs=0.01)  # the arm followed


def test_cubic_and_quintic_when_velocities_given(rig):
    """With velocities at both ends of a segment the sample is JTC's cubic, with accelerations too its quintic:
    here from the command in force (at rest) to a point at rest, the smoothstep 3u^2 - 2u^3 and 10u^3-15u^4+6u^5."""
    cubic, quintic = (lambda u: 3 * u**2 - 2 * u**3), (lambda u: 10 * u**3 - 15 * u**4 + 6 * u**5)
    for acc, shape in ((None, cubic), (np.zeros((1, 6)), quintic)):
        rig.ex.hold_now("test")
        rig.run(0.3)
        t_s, w0, now = rig.t - DT, rig.ex.last_sent[0], rig.t
        target = HOME[None] + [[0.3, 0, 0, 0, 0, 0]]
        assert rig.ex.submit(target, [np.nan], [0.6], stamp=0.0, now=now, velocities=np.zeros((1, 6)),
                             accelerations=acc)
        for t, st in _ticks(rig, 8):
            u = min((t - t_s) / (now + 0.6 - t_s), 1.0)
            assert st["sampled_target"][0] == pytest.approx(w0 + (0.3 - w0) * shape(u), abs=2e-5), t - now


def test_interpolate_matches_the_boundary_conditions():
    rng = np.random.default_rng(0)
    p0, p1, v0, v1, a0, a1 = rng.normal(size=(6, 6))
    for v, a, order in ((None, None, 0), ((v0, v1), None, 1), ((v0, v1), (a0, a1), 2)):
        kw = {} if v is None else {"v0": v[0], "v1": v[1]}
        kw.update({} if a is None else {"a0": a[0], "a1": a[1]})
        for t, p, vel, acc in ((2.0, p0, v0, a0), (2.5, p1, v1, a1)):
            out = interpolate(t, 2.0, p0, 2.5, p1, **kw)
            np.testing.assert_allclose(out[0], p, atol=1e-9)
            if order >= 1:
                np.testing.assert_allclose(out[1], vel, atol=1e-9)
            if order >= 2:
                np.testing.assert_allclose(out[2], acc, atol=1e-9)
        mid = interpolate(2.2, 2.0, p0, 2.5, p1, **kw)[0]
        if order == 0:
            np.testing.assert_allclose(mid, p0 + 0.4 * (p1 - p0))
    # outside the segment: clamped to its ends
    np.testing.assert_allclose(interpolate(9.0, 2.0, p0, 2.5, p1, v0=v0, v1=v1)[0], p1)


def test_streamed_one_point_commands_move_at_the_implied_speed(rig):
    """A client re-sending one point 0.2 s ahead every control period (faster than its time_from_start): each
    replaces the last before its point is due, and every tick still moves the arm a third of the way: from the last
    command (sent one period before receipt) to the point 0.2 s after receipt, sampled at receipt, is 0.1 s / 0.3 s."""
    rig.run(0.3)
    target = HOME[None] + [[0.3, 0, 0, 0, 0, 0]]
    sent = []
    for _ in range(12):
        prev = rig.ex.last_sent
        assert rig.ex.submit(target, [np.nan], [0.2], stamp=0.0, now=rig.t)
        rig.run(DT)
        sent.append(rig.ex.last_sent[0])
        if prev is not None:
            assert sent[-1] == pytest.approx(prev[0] + (0.3 - prev[0]) / 3, abs=1e-9)
    assert np.all(np.diff(sent) > 0) and 0.29 < sent[-1] < 0.3
    assert rig.q()[0] == pytest.approx(0.3, abs=0.015)
    assert rig.ex.counts["watchdog_holds"] == 0


def test_new_trajectory_replaces_the_old_from_now_on(rig):
    rig.run(0.3)
    slow = np.tile(HOME, (2, 1))
    slow[:, 0] = [0.2, 0.4]
    rig.ex.submit(slow, [np.nan] * 2, [1.0, 2.0], stamp=0.0, now=rig.t)
    rig.run(0.5)
    c, t_s = rig.ex.last_sent.copy(), rig.t - DT
    back = HOME[None] + [[-0.1, 0, 0, 0, 0, 0]]
    rig.ex.submit(back, [np.nan], [0.5], stamp=0.0, now=rig.t)
    t_end = rig.t + 0.5
    for t, st in _ticks(rig, 7):
        want = np.interp(t, [t_s, t_end], [c[0], -0.1])  # from the command in force, none of the old points
        assert st["target"][0] == pytest.approx(want, abs=2e-5), t


def test_future_stamp_moves_at_once_toward_its_first_point(rig):
    """JTC: a trajectory stamped in the future replaces the running one at once; the arm moves from the command in
    force so as to reach the first point at stamp + time_from_start (not held until then)."""
    rig.run(0.3)
    t_s, now = rig.t - DT, rig.t
    rig.ex.submit(HOME[None] + [[0.3, 0, 0, 0, 0, 0]], [np.nan], [0.0], stamp=now + 1.0, now=now)
    w = [st["target"][0] for _, st in _ticks(rig, 14)]
    assert w[0] == pytest.approx(0.3 * (now - t_s) / (now + 1.0 - t_s), abs=2e-5)
    assert np.all(np.diff(w[:10]) > 0) and w[9] < 0.3 and w[10:] == pytest.approx([0.3] * 4)
    assert rig.q()[0] == pytest.approx(0.3, abs=0.01)


def test_stale_future_and_non_finite_rejected(rig):
    rig.run(2.0)
    target = HOME[None] + [[0.5, 0, 0, 0, 0, 0]]
    assert not rig.ex.submit(target, [0.03], [0.0], stamp=rig.t - 2.0, now=rig.t)
    assert not rig.ex.submit(target, [0.03], [0.0], stamp=rig.t + 30.0, now=rig.t)
    bad = target.copy()
    bad[0, 2] = np.nan
    assert not rig.ex.submit(bad, [0.03], [0.0], stamp=0.0, now=rig.t)
    assert rig.logged("s old (> max_command_age") and rig.logged("in the future") and rig.logged("elbow=nan")
    q0 = rig.q()
    rig.run(0.5)
    assert np.max(np.abs(rig.q() - q0)) < 2e-3
    assert rig.ex.counts["rejected"] == 3 and rig.ex.counts["accepted"] == 0


def test_speed_limited_and_watchdog_holds(rig):
    rig.ex.submit(HOME[None] + [[1.5, 0, 0, 0, 0, 0]], [np.nan], [0.0], stamp=0.0, now=rig.t)
    rig.run(1.5)
    stopped = rig.q()[0]
    # 0.15 rad per period (1.5 rad/s): moving for command_timeout (0.5 s) + one period, then held short of 1.5
    assert 0.5 < stopped < 1.1, stopped
    assert rig.ex.counts["watchdog_holds"] == 1 and rig.ex.mode == "hold" and rig.logged("watchdog")
    rig.run(0.5)
    assert abs(rig.q()[0] - stopped) < 5e-3


def test_estop_latches_until_released_and_enabled(rig):
    far = HOME[None] + [[1.5, 0, 0, 0, 0, 0]]
    rig.ex.submit(far, [np.nan], [0.0], stamp=0.0, now=rig.t)
    rig.run(0.3)
    rig.ex.estop(True)
    rig.run(DT)
    q_e = rig.q()
    rig.ex.submit(far, [np.nan], [0.0], stamp=0.0, now=rig.t)  # ignored while latched
    rig.run(0.5)
    assert np.max(np.abs(rig.q() - q_e)) < 5e-3 and rig.ex.counts["ignored"] == 1
    ok, msg = rig.ex.enable(True)
    assert not ok and "/postbc/estop" in msg  # the input still says True
    rig.ex.estop(False)
    assert rig.ex.estopped  # still latched until enable
    assert rig.ex.enable(True) == (True, "e-stop cleared")
    rig.ex.submit(far, [np.nan], [0.0], stamp=0.0, now=rig.t)
    rig.run(0.3)
    assert rig.q()[0] > q_e[0] + 0.3


def test_go_home_reaches_home_and_times_out_when_blocked():
    rig = Rig(home_timeout=1.0)
    try:
        rig.ex.submit(HOME[None] + [[0.5, -0.3, 0.3, 0.2, 0, 0]], [0.02], [0.0], stamp=0.0, now=rig.t)
        rig.run(0.6)
        result = {}
        th = threading.Thread(target=lambda: result.update(r=rig.ex.go_home(rig.t, wall_timeout=60.0)))
        th.start()
        while th.is_alive():
            rig.run(DT)
        assert result["r"] == (True, "home reached")
        assert np.max(np.abs(rig.q() - HOME)) < 0.01 and rig.ex.gripper == pytest.approx(0.037)
        # unreachable home (a speed limit that makes it take longer than home_timeout): reported, then held
        rig.ex.submit(HOME[None] + [[0.5, 0, 0, 0, 0, 0]], [np.nan], [0.0], stamp=0.0, now=rig.t)
        rig.run(1.0)
        rig.robot.safety.limits.max_joint_step = 0.01  # 0.5 rad back home now takes 5 s
        th = threading.Thread(target=lambda: result.update(r=rig.ex.go_home(rig.t, wall_timeout=60.0)))
        th.start()
        while th.is_alive():
            rig.run(DT)
        ok, msg = result["r"]
        assert not ok and "from home after 1.0 s" in msg and rig.ex.mode == "hold"
    finally:
        rig.robot.close()
