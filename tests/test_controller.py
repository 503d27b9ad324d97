"""TrajectoryExecutor (the robot_driver's scheduling and holds) on a SimRobot, without ROS: sim time is advanced by
the test, so every assertion is in robot time and none depends on the machine's speed."""

import threading

import numpy as np
import pytest
from postbc_core.robots import kinematics
from postbc_core.robots.controller import ExecutorConfig, TrajectoryExecutor

HOME = kinematics.HOME_QPOS
DT = 0.1  # s, control period (10 Hz)


class Rig:
    """A SimRobot whose physics the test steps: `run(seconds)` = executor step + one control period of physics."""

    def __init__(self, **cfg):
        from postbc_core.robots.sim_robot import SimRobot

        self.robot = SimRobot("lift_cube", step_on_send=False, action_mode="joint", control_hz=1 / DT)
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


def test_points_execute_at_their_times(rig):
    q = np.tile(HOME, (3, 1))
    q[:, 0] = [0.1, 0.2, 0.3]
    assert rig.ex.submit(q, np.full(3, np.nan), [0.0, 0.4, 0.8], stamp=0.0, now=rig.t)
    waist = []
    for _ in range(12):
        rig.run(DT)
        waist.append(rig.q()[0])
    # each point is held from its due time (+ one period to be reached) until the next one's
    assert waist[2] == pytest.approx(0.1, abs=0.01) and waist[6] == pytest.approx(0.2, abs=0.01)
    assert waist[10] == pytest.approx(0.3, abs=0.01)
    assert waist[3] < 0.15 and waist[7] < 0.25  # not early


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
