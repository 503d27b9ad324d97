"""The node graph of every launch profile, defined once as Python data.

`graph(profile, settings)` -> [NodeSpec]: which nodes run, with which parameters. Two consumers:
- the launch files (launch/*.launch.py): `launch_description(profile)` maps the specs to launch_ros `Node`s, declares
  one launch argument per `Bringup` field and includes Interbotix's `xsarm_control.launch.py` for the real arm;
- the in-process runner (`postbc ros run <profile>`, runner.py) composes the same nodes in one process (how the
  stack runs where `ros2 launch` is not installed, and how the tests run it).

Profiles: sim (driver + cameras), record_demos (+ teleop + recorder), policy (+ policy, optionally a recorder of the
rollouts), finetune (+ teleop for episode keys / labels on the real arm, + the finetune manager, which runs the
frozen policy itself). Every profile also starts the operator's console (nodes/console.py; `console:=false` leaves
it out). Node parameters are checked against each node's `Params` dataclass
here, so a typo fails before anything starts.

Teleop input: `teleop:=joy` adds joy's `game_controller_node` (apt ros-humble-joy), `teleop:=spacemouse` spacenav's
`spacenav_node` (apt ros-humble-spacenav + the spacenavd daemon). `teleop:=keyboard` starts no input node: a launch
gives its children a pipe, not the terminal, so the keys are read by `ros2 run postbc keyboard` in a terminal of its
own (as teleop_twist_keyboard is run), which publishes them to the teleop node.

Camera frames between processes: the launch gives every process it starts (ours and Interbotix's) the Fast DDS
profile share/postbc/config/fastdds_profile.xml (a shared-memory segment sized for 640x480 frames; the file says why),
unless `fastdds_profile:=none` or another file is given. The in-process runner needs none: one process delivers
intra-process.

Every node of a launched profile is required: when one exits (the driver cannot reach the arm, a camera is
unplugged, a checkpoint does not load), the launch shuts the others down and repeats that node's last error line at
the end, so the cause is the last thing on the screen.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any

from postbc_core.errors import ConfigError

from postbc import params as params_mod

BACKENDS = ("sim", "interbotix")
TELEOP_DEVICES = ("keyboard", "joy", "spacemouse")


@dataclass
class Bringup:
    """Settings shared by the launch profiles (each is a launch argument and a `--set key=value` of the runner)."""

    backend: str = "sim"
    """"sim" (MuJoCo twin, publishes /clock; every node uses sim time) or "interbotix" (the real arm)."""
    robot_model: str = "wx250s"
    """Interbotix robot model (xsarm_control's robot_model)."""
    task: str = "lift_cube"
    """Sim task (postbc_core sim registry); also stored as the episodes' task name."""
    cameras: tuple[str, ...] = ("front", "wrist")
    """Camera names, comma-separated: one camera node each, topics /<name>/image_raw. `none` = no cameras
    (state-only policies)."""
    camera_serials: tuple[str, ...] = ()
    """RealSense serial numbers, comma-separated, one per camera in order (real arm; `none` = the connected
    devices in serial order)."""
    image_width: int = 0
    """Camera image width in pixels (0 = backend default: 640 real, 128 sim)."""
    image_height: int = 0
    """Camera image height in pixels (0 = backend default: 480 real, 128 sim)."""
    camera_fps: float = 0.0
    """Camera rate in Hz (0 = backend default: 30 real, control_hz sim; software rendering is slow)."""
    control_hz: float = 10.0
    """Control rate of teleop, policy and recorder (Hz; the WidowX runs 5-10 Hz)."""
    teleop: str = "keyboard"
    """Teleop input: keyboard (run `ros2 run postbc keyboard` in its own terminal) | joy (starts joy's
    game_controller_node) | spacemouse (starts spacenav's spacenav_node)."""
    joy_device_id: int = 0
    """teleop:=joy: the gamepad's SDL device index (joy's device_id parameter)."""
    store: str = "data/demos.zarr"
    """Episode store the recorder writes (created, or appended to when it exists)."""
    codec: str = ""
    """Camera codec of a new episode store (the recorder's, the finetune manager's replay): raw, jpeg, jpeg:Q,
    jpegxl-lossless, or per camera front_rgb=jpeg:85,wrist_rgb=raw (postbc_core.data.codecs; jpeg needs the codecs
    extra). Empty: raw for a new store, an existing store's own."""
    checkpoint: str = ""
    """Policy checkpoint (.safetensors or a `postbc train` run directory) for the policy/finetune profiles."""
    device: str = "auto"
    """Torch device for inference: auto (CUDA when present) | cpu | cuda | cuda:N."""
    record: bool = False
    """policy profile: also record the rollouts (recorder with source=policy, success from the sim detector)."""
    real_time_factor: float = 1.0
    """sim: physics speed relative to the wall clock."""
    seed: int = 0
    """sim: seed of the first episode (the driver's ~/reset uses seed, seed+1, ...)."""
    finetune_out: str = "runs/finetune"
    """finetune profile: run directory (checkpoints, replay store, metrics)."""
    console: bool = True
    """Start the operator's browser console (camera views, status, episode buttons, e-stop) on
    http://<console_host>:<console_port>/; false leaves it out."""
    console_host: str = "127.0.0.1"
    """Interface the console serves on: 127.0.0.1 = this machine only (reach it through an SSH tunnel); any other
    address needs console_token."""
    console_port: int = 8080
    """TCP port of the console (0 = any free port; the console logs its URL)."""
    console_token: str = ""
    """Access token the console requires on every request (open http://host:port/?token=...); empty =
    $POSTBC_CONSOLE_TOKEN, else none (allowed on 127.0.0.1 only)."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: choose one of {BACKENDS}")
        if self.teleop not in TELEOP_DEVICES:
            raise ConfigError(f"teleop={self.teleop!r}: choose one of {TELEOP_DEVICES}")
        self.cameras = tuple(c for c in self.cameras if c)
        self.camera_serials = tuple(s for s in self.camera_serials if s)
        if self.camera_serials and len(self.camera_serials) != len(self.cameras):
            raise ConfigError(f"camera_serials {self.camera_serials} must give one serial per camera {self.cameras}")
        if not 1.0 <= self.control_hz <= 50.0:
            raise ConfigError(f"control_hz={self.control_hz}: use 1..50 Hz (the WidowX runs 5-10 Hz)")
        if self.real_time_factor <= 0:
            raise ConfigError(f"real_time_factor={self.real_time_factor} must be > 0")

    @property
    def sim(self) -> bool:
        return self.backend == "sim"


@dataclass(frozen=True)
class NodeSpec:
    """One node of a profile: `ros2 run <package> <executable>` named `name` with `parameters`. Nodes of other
    packages (the joy / spacenav input drivers) run under `ros2 launch` only; their parameters are theirs."""

    executable: str
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    package: str = "postbc"
    own_process: bool = False
    """The in-process runner starts this node as a process of its own instead of composing it (the console: its
    web server would share the control nodes' GIL; benchmarks/bench_ros_console.py)."""

    @property
    def ours(self) -> bool:
        return self.package == "postbc"

    @property
    def module(self) -> str:
        return f"postbc.nodes.{self.executable}"

    @property
    def class_name(self) -> str:
        return "".join(p.capitalize() for p in self.executable.split("_"))

    def node_class(self):
        return getattr(importlib.import_module(self.module), self.class_name)

    def params_class(self):
        return importlib.import_module(self.module).Params


PROFILES = ("sim", "record_demos", "policy", "finetune")
# The standard ROS 2 input drivers teleop listens to (Humble apt packages ros-humble-joy, ros-humble-spacenav).
# joy: game_controller_node reports every supported pad in SDL2's GameController order (teleop's default mapping);
# autorepeat_rate republishes a held stick, which teleop's input_timeout relies on. spacenav: spacenav_node publishes
# /spacenav/twist and /spacenav/joy (relative names, root namespace) from the spacenavd daemon.
JOY_NODE = ("joy", "game_controller_node")
SPACENAV_NODE = ("spacenav", "spacenav_node")


def _driver(s: Bringup) -> NodeSpec:
    p: dict[str, Any] = {"backend": s.backend, "robot_model": s.robot_model, "control_hz": s.control_hz}
    if s.sim:
        p.update(task=s.task, seed=s.seed, real_time_factor=s.real_time_factor)
    return NodeSpec("robot_driver", "robot_driver", p)


def _cameras(s: Bringup) -> list[NodeSpec]:
    specs = []
    for i, cam in enumerate(s.cameras):
        p: dict[str, Any] = {"backend": "sim" if s.sim else "realsense", "camera": cam,
                             "width": s.image_width or (128 if s.sim else 640),
                             "height": s.image_height or (128 if s.sim else 480),
                             "fps": s.camera_fps or (s.control_hz if s.sim else 30.0)}
        if s.sim:
            p["task"] = s.task
        elif s.camera_serials:
            p["serial"] = s.camera_serials[i]
        else:
            # No serials: the k-th camera takes the k-th connected RealSense sorted by serial, so the cameras get
            # distinct devices, the same ones on every start (each node logs its serial; pin with camera_serials).
            p["index"] = i
        specs.append(NodeSpec("camera", f"camera_{cam}", p))
    return specs


def _teleop(s: Bringup) -> list[NodeSpec]:
    """The teleop node and the standard input driver of its device (none for the keyboard: see the module doc)."""
    specs = [NodeSpec("teleop", "teleop", {"device": s.teleop, "control_hz": s.control_hz})]
    if s.teleop == "joy":
        pkg, exe = JOY_NODE
        specs.append(NodeSpec(exe, "joy", {"device_id": s.joy_device_id, "deadzone": 0.05, "autorepeat_rate": 20.0},
                              package=pkg))
    elif s.teleop == "spacemouse":
        pkg, exe = SPACENAV_NODE
        specs.append(NodeSpec(exe, "spacenav", {"zero_when_static": True}, package=pkg))
    return specs


def _recorder(s: Bringup, source: str) -> NodeSpec:
    p: dict[str, Any] = {"store": s.store, "control_hz": s.control_hz, "cameras": list(s.cameras), "task": s.task,
                         "source": source, **({"codec": s.codec} if s.codec else {})}
    if s.sim:
        p["auto_label_success"] = source != "teleop"
    return NodeSpec("recorder", "recorder", p)


def _policy(s: Bringup, **extra) -> NodeSpec:
    if not s.checkpoint:
        raise ConfigError("this profile runs a policy: give checkpoint:=<policy.safetensors | run dir> "
                          "(`postbc ros run ... --set checkpoint=PATH`)")
    sim = {"task": s.task} if s.sim else {}  # the task's state keys from the driver's object poses
    return NodeSpec("policy", "policy", {"checkpoint": s.checkpoint, "device": s.device,
                                         "control_hz": s.control_hz, "cameras": list(s.cameras), **sim, **extra})


def graph(profile: str, settings: Bringup | None = None,
          node_overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeSpec]:
    """The nodes of `profile`. node_overrides: {node name: {param: value}} applied last (e.g. from --set
    recorder.max_episode_s=30). Every parameter is checked against the node's Params dataclass."""
    return _apply_overrides(_nodes(profile, settings or Bringup()), node_overrides or {})


def _nodes(profile: str, s: Bringup) -> list[NodeSpec]:
    """The nodes of `profile` with the parameters `s` gives them (unchecked: graph() checks them)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    specs = [_driver(s), *_cameras(s)]
    if profile == "record_demos":
        specs += [*_teleop(s), _recorder(s, "teleop")]
    elif profile == "policy":
        specs.append(_policy(s))
        if s.record:
            specs.append(_recorder(s, "policy"))
    elif profile == "finetune":
        # The manager runs the frozen policy itself (exact DSRL transitions; see nodes/finetune_manager.py).
        _policy(s)  # the same checkpoint check
        if not s.sim:  # the operator resets the scene and labels episodes with the teleop keys
            specs += _teleop(s)
        specs.append(NodeSpec("finetune_manager", "finetune_manager",
                              {"checkpoint": s.checkpoint, "out": s.finetune_out, "task": s.task, "device": s.device,
                               "control_hz": s.control_hz, "backend": s.backend, "auto_start": s.sim,
                               "cameras": list(s.cameras), **({"codec": s.codec} if s.codec else {})}))
    if s.console:
        specs.append(_console(s, profile))
    if s.sim:
        specs = [dataclasses.replace(n, parameters={**n.parameters, "use_sim_time": True}) if n.ours else n
                 for n in specs]
    return specs


def _console(s: Bringup, profile: str) -> NodeSpec:
    """The operator's console (nodes/console.py): it shows the profile's cameras and status topics."""
    return NodeSpec("console", "console", {"host": s.console_host, "port": s.console_port, "token": s.console_token,
                                           "cameras": list(s.cameras), "profile": profile}, own_process=True)


def _apply_overrides(specs: list[NodeSpec], overrides: dict[str, dict[str, Any]]) -> list[NodeSpec]:
    names = [n.name for n in specs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"parameter overrides for node(s) {unknown}, which this profile does not run ({names})")
    return [dataclasses.replace(n, parameters=check_parameters(n, {**n.parameters, **overrides.get(n.name, {})}))
            for n in specs]


# Parameters every rclpy node has (not part of a node's Params), with their types.
BUILTIN_PARAMETERS = {"use_sim_time": bool}


def check_parameters(spec: NodeSpec, values: dict[str, Any]) -> dict[str, Any]:
    """`values` as the node will get them (ints -> floats for float parameters, lists for arrays: ROS refuses an
    integer for a double); ConfigError naming the node unless they build the node's Params (names, types,
    __post_init__ checks). Another package's node declares its own parameters: nothing to check here."""
    if not spec.ours:
        return dict(values)
    try:
        typed = typed_parameters(spec, values)
        params_mod.coerce(spec.params_class(), {k: v for k, v in typed.items() if k not in BUILTIN_PARAMETERS})
    except ConfigError as e:
        raise ConfigError(f"node {spec.name!r}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"node {spec.name!r}: bad parameter value ({e})") from None
    return typed


def typed_parameters(spec: NodeSpec, values: dict[str, Any]) -> dict[str, Any]:
    """`values` in the types of the node's parameters (params.check_values); ConfigError for a name the node does
    not have or a value of another type. The dataclass's range checks need all of the node's parameters:
    check_parameters runs them."""
    typed = params_mod.check_values(spec.params_class(),
                                    {k: v for k, v in values.items() if k not in BUILTIN_PARAMETERS})
    for k, v in values.items():
        if k in BUILTIN_PARAMETERS:
            try:
                typed[k] = params_mod.typed(BUILTIN_PARAMETERS[k], v)
            except TypeError:
                raise ConfigError(f"{k}={v!r}: expected {params_mod.expected(BUILTIN_PARAMETERS[k])}") from None
    return {k: typed[k] for k in values}


def parse_sets(items: list[str], specs: list[NodeSpec] = ()) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`key=value` (a Bringup field) and `node.param=value` (one node's parameter) -> (settings, node_overrides).
    Values are YAML literals (5, 0.5, true, [a, b]); with the profile's `specs`, a string parameter of one of its
    nodes keeps the text as typed (camera_front.serial=0123 stays "0123", which YAML would read as the number 83)."""
    fields = {f.name for f in dataclasses.fields(Bringup)}
    strings = {(n.name, k) for n in specs if n.ours for k, t in typing.get_type_hints(n.params_class()).items()
               if t is str}
    settings: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write key=value (e.g. control_hz=5 or recorder.max_episode_s=30)")
        if "." in key:
            node, param = key.split(".", 1)
            nodes.setdefault(node, {})[param] = text if (node, param) in strings else params_mod.parse_value(text)
        elif key in fields:
            settings[key] = params_mod.parse_value(text)
        else:
            raise ConfigError(f"--set {key}: not a bringup setting ({sorted(fields)}); for a node parameter write "
                              f"<node>.{key}=...")
    return settings, nodes


# How a launch argument says "empty list": ros2launch refuses `name:=` with nothing after it.
EMPTY_LIST_WORDS = ("", "none", "[]", "''", '""')


def make_settings(values: dict[str, Any]) -> Bringup:
    """Bringup from launch-argument / --set values (strings from launch are parsed; lists for tuple fields)."""
    kw = {}
    for f in dataclasses.fields(Bringup):
        if f.name not in values:
            continue
        v = values[f.name]
        if str(f.type).startswith("tuple"):
            if v is None or (isinstance(v, str) and v.strip().lower() in EMPTY_LIST_WORDS):
                v = ()
            elif isinstance(v, str):
                v = tuple(x.strip() for x in v.split(","))
            v = tuple(str(x) for x in v)
        elif str(f.type) == "str":
            v = "" if v is None else str(v)
        elif isinstance(v, str):
            v = params_mod.parse_value(v)
        kw[f.name] = v
    try:
        return params_mod.coerce(Bringup, kw)
    except ConfigError as e:
        raise ConfigError(f"bringup setting {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bringup settings {kw}: bad value ({e})") from None


PARAMS_KEY = "ros__parameters"
WILDCARD = "**"  # `/**:` (the leading "/" dropped), every node


def load_params_file(path: str) -> dict[str, dict[str, Any]]:
    """A ROS 2 parameters YAML -> {node: {param: value}}, read as rcl reads it: the keys above `ros__parameters`
    are the node's namespace and name (`ns: {node: {ros__parameters: ...}}` is "ns/node"), a leading "/" is
    dropped (`/robot_driver:` = `robot_driver:`, `/**:` = "**", every node), and mappings under
    `ros__parameters` are namespaces of dotted parameter names. ConfigError naming the file and the entry for
    malformed YAML and for the layouts rcl refuses (a value outside `ros__parameters`, no node name above it)."""
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file {path} not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the params file ({e})") from None
    fix = "write `<node>:` / `/**:`, then `ros__parameters:`, then `<parameter>: <value>` lines (the ROS 2 format)"
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: holds a {type(doc).__name__}, not a mapping of node names; {fix}")
    out: dict[str, dict[str, Any]] = {}

    def flat(body: dict, prefix: str) -> dict[str, Any]:
        vals: dict[str, Any] = {}
        for k, v in body.items():
            vals.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return vals

    def walk(body: dict, trail: list[str]) -> None:
        for key, val in body.items():
            key = str(key)
            if key == PARAMS_KEY:
                node = "/".join(trail).lstrip("/")
                if not node:
                    raise ConfigError(f"{path}: `{PARAMS_KEY}:` with no node name above it; {fix}")
                if not isinstance(val, (dict, type(None))):
                    raise ConfigError(f"{path}: {node}.{PARAMS_KEY} holds {val!r}, not parameters; {fix}")
                out.setdefault(node, {}).update(flat(val or {}, ""))
            elif isinstance(val, dict):
                walk(val, [*trail, key])
            else:
                where = "/".join([*trail, key])
                raise ConfigError(f"{path}: {where}: {val!r} is not under a `{PARAMS_KEY}:` key; {fix}")

    walk(doc, [])
    return out


def merge_params_file(specs: list[NodeSpec], file_params: dict[str, dict[str, Any]],
                      path: str = "params file") -> dict[str, dict[str, Any]]:
    """Per-node overrides from a params file (load_params_file), checked like --set before anything starts: every
    entry names a node of this stack and every parameter one of that node's, with a value of its type (a misspelt
    safety limit must never be ignored); `/**` entries go to every node of `specs` that has the parameter.
    Entries for nodes of the stack that this profile does not start (a site file configures them all) are checked
    and left out, as ROS 2 leaves them. Wildcards other than `/**` and namespaced nodes are refused: the nodes are
    rclpy nodes in the root namespace, and rclpy applies only `/**` and the node's own name (other keys would be
    ignored). ConfigError naming `path` and the key."""
    import difflib

    stack = _every_node(specs)

    def names(n: NodeSpec) -> set[str]:
        return {f.name for f in dataclasses.fields(n.params_class())} | set(BUILTIN_PARAMETERS)

    def check(n: NodeSpec, where: str, vals: dict[str, Any]) -> None:
        try:
            typed_parameters(n, vals)
        except ConfigError as e:
            raise ConfigError(f"{path}: {where}: {e}") from None

    for key, vals in file_params.items():
        if key == WILDCARD:
            ours = [n for n in stack.values() if n.ours]
            for param, v in vals.items():
                owners = [n for n in ours if param in names(n)]
                if not owners:
                    every = sorted(set().union(*map(names, ours)))
                    close = difflib.get_close_matches(param, every, n=1)
                    raise ConfigError(f"{path}: /**: {param}: no node of this stack has this parameter"
                                      + (f" (did you mean {close[0]!r}?)" if close else ""))
                for n in owners:
                    check(n, f"/**: node {n.name!r}", {param: v})
        elif "*" in key:
            raise ConfigError(f"{path}: '/{key}': rclpy nodes take only `/**:` (every node) and a node's own name "
                              f"(`robot_driver:` or `/robot_driver:`); they would ignore this entry")
        elif "/" in key:
            raise ConfigError(f"{path}: '/{key}': the postbc nodes run in the root namespace; name the node alone "
                              f"(`{key.rsplit('/', 1)[-1]}:`)")
        elif key not in stack:
            close = difflib.get_close_matches(key, list(stack), n=1)
            raise ConfigError(f"{path}: {key!r} is not a node of this stack"
                              + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; its nodes: {sorted(stack)}")
        elif stack[key].ours:
            check(stack[key], f"node {key!r}", vals)

    glob = file_params.get(WILDCARD, {})
    out: dict[str, dict[str, Any]] = {}
    for n in specs:
        vals = {k: v for k, v in glob.items() if k in names(n)} if n.ours else {}
        vals.update(file_params.get(n.name, {}))  # e.g. joy: {device_id: 1}; another package's node checks its own
        if vals:
            out[n.name] = vals
    return out


def _every_node(specs: list[NodeSpec]) -> dict[str, NodeSpec]:
    """The nodes a params file may name: those of `specs`, and those that any profile starts with any teleop
    device, with rollouts recorded and the default cameras (config/widowx.yaml sets camera_front's serial, used
    by every profile that runs cameras)."""
    s = Bringup(backend="interbotix", checkpoint="-", record=True)
    out = {n.name: n for n in specs}
    for profile in PROFILES:
        for teleop in TELEOP_DEVICES:
            for n in _nodes(profile, dataclasses.replace(s, teleop=teleop)):
                out.setdefault(n.name, n)
    return out


def apply_params_file(specs: list[NodeSpec], path: str) -> dict[str, dict[str, Any]]:
    """The checked per-node overrides of params file `path` for the nodes of `specs` (see merge_params_file)."""
    return merge_params_file(specs, load_params_file(path), path)


# -- launch_ros mapping (used by launch/*.launch.py; launch/launch_ros exist where ROS 2 is installed) -------------
XSARM_CONTROL = ("interbotix_xsarm_control", "launch/xsarm_control.launch.py")
# The Fast DDS profile every launched process gets (relative to share/postbc): without it Fast DDS's 512 KiB default
# shared-memory segment drops most 640x480 frames on their way to the recorder (measured by
# benchmarks/bench_ros_recorder.py; the file explains the sizing and the alternatives measured).
FASTDDS_PROFILE = "config/fastdds_profile.xml"
# Fast DDS 3.x (Kilted and later; the pinned wheels) reads FASTDDS_DEFAULT_PROFILES_FILE. Fast DDS 2.x reads only
# FASTRTPS_DEFAULT_PROFILES_FILE: Humble 2.6, Iron 2.10, Jazzy 2.14 (each distro's ros2.repos; the robot-environment
# test venv runs Jazzy's 2.14 wheels); Kilted's rmw_fastrtps still reads the old name but logs a deprecation warning
# per process, so the old name is set only where Fast DDS 2.x runs, or where that cannot be told.
FASTDDS_PROFILE_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS2_DISTROS = ("humble", "iron", "jazzy")
FASTDDS_PROFILE_DOC = ("Fast DDS XML profile given to every launched process (FASTDDS_DEFAULT_PROFILES_FILE, and "
                       "FASTRTPS_DEFAULT_PROFILES_FILE on Humble..Jazzy); empty = share/postbc/config/"
                       "fastdds_profile.xml (shared memory sized for 640x480 camera frames), none = leave the "
                       "environment as it is")


def fastdds_profile_env(choice: str, share_dir: str, ros_distro: str | None = None) -> dict[str, str]:
    """The environment variables the launch sets for launch argument `fastdds_profile:=choice`: "" -> the shipped
    profile under `share_dir` (share/postbc), "none" -> {} (the caller's own profile or Fast DDS's defaults), else
    the file `choice`, which must exist (Fast DDS would otherwise log one error line and run on its defaults).
    The variable names follow the Fast DDS major version (`fastdds_major`) of `ros_distro` (default $ROS_DISTRO)."""
    import os
    from pathlib import Path

    choice = choice.strip()
    if choice.lower() == "none":
        return {}
    path = Path(choice) if choice else Path(share_dir) / FASTDDS_PROFILE
    if not path.is_file():
        fix = ("reinstall the postbc package (colcon build installs it)" if not choice
               else "give an existing Fast DDS XML file, or fastdds_profile:=none to keep the environment's")
        raise ConfigError(f"fastdds_profile: {path} does not exist; {fix}")
    distro = os.environ.get("ROS_DISTRO", "") if ros_distro is None else ros_distro
    names = FASTDDS_PROFILE_ENV[:1] if fastdds_major(distro) == 3 else FASTDDS_PROFILE_ENV
    return {name: str(path.resolve()) for name in names}


def fastdds_major(ros_distro: str) -> int | None:
    """Fast DDS major version of ROS 2 `ros_distro` (set by every ROS 2 setup script); without one (the PyPI ROS
    wheels set none), that of the installed Fast DDS wheel (ros-fastdds: 3.x, ros-fastrtps: 2.x); None if unknown."""
    from importlib.metadata import PackageNotFoundError, version

    distro = ros_distro.strip().lower()
    if distro:
        return 2 if distro in FASTDDS2_DISTROS else 3
    for dist in ("ros-fastdds", "ros-fastrtps"):
        try:
            return int(version(dist).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
    return None


def launch_description(profile: str):
    """A LaunchDescription for `profile`: one launch argument per Bringup field (+ params_file), the profile's nodes
    as launch_ros Nodes, and Interbotix's xsarm_control.launch.py when backend:=interbotix."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    args = [DeclareLaunchArgument(f.name, default_value=_launch_default(f), description=_doc(f.name))
            for f in dataclasses.fields(Bringup)]
    args.append(DeclareLaunchArgument("params_file", default_value="",
                                      description="ROS 2 parameters YAML with per-node overrides "
                                                  "(e.g. share/postbc/config/widowx.yaml)"))
    args.append(DeclareLaunchArgument("fastdds_profile", default_value="", description=FASTDDS_PROFILE_DOC))
    return LaunchDescription([*args, OpaqueFunction(function=_launch_setup, args=[profile])])


def _doc(name: str) -> str:
    return params_mod.field_docs(Bringup).get(name, "")


def _launch_default(f) -> str:
    v = f.default
    if isinstance(v, tuple):
        return ",".join(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def launch_parameters(spec: NodeSpec) -> dict[str, Any]:
    """The parameters launch_ros can pass for `spec`. launch_ros refuses an empty list (it cannot infer the array's
    element type), so an empty list is left out when the node's own default is already empty."""
    defaults = params_mod.defaults(spec.params_class()) if spec.ours else {}
    out = {}
    for k, v in spec.parameters.items():
        if isinstance(v, (list, tuple)) and not v:
            if defaults.get(k, []) != []:
                raise ConfigError(f"node {spec.name!r}: {k}=[] cannot be passed by ros2 launch (its default is "
                                  f"{defaults[k]}); use `postbc ros run` or a params file")
            continue
        out[k] = v
    return out


class _ExitWatch:
    """Ends the launch when any node exits on its own and repeats that node's last error line after every
    process has stopped (the other nodes' shutdown logs would otherwise bury it)."""

    def __init__(self, names: list[str]):
        self.running = set(names)
        self.last_err: dict[str, str] = {}
        self.first_exit: tuple[str, int] | None = None

    def on_stderr(self, name: str, event) -> None:
        lines = [ln.strip() for ln in event.text.decode(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:") or "[ERROR]" in ln or "[FATAL]" in ln]
        if errors:
            self.last_err[name] = errors[-1]

    def on_exit(self, name: str, event, context):
        from launch.actions import LogInfo, Shutdown

        self.running.discard(name)
        actions = []
        if not context.is_shutdown and self.first_exit is None:
            self.first_exit = (name, event.returncode)
            actions.append(Shutdown(reason=f"{name} exited (code {event.returncode}); the profile needs every node"))
        if not self.running and self.first_exit is not None:
            first, code = self.first_exit
            err = self.last_err.get(first, "")
            actions.append(LogInfo(msg=f"launch stopped because {first} exited with code {code}"
                                       + (f": {err}" if err else "")))
        return actions


def _launch_setup(context, profile: str):
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler, SetEnvironmentVariable
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node

    values = {f.name: context.launch_configurations[f.name] for f in dataclasses.fields(Bringup)
              if f.name in context.launch_configurations}
    settings = make_settings(values)
    params_file = context.launch_configurations.get("params_file", "")
    specs = graph(profile, settings)
    if params_file:  # checked here, before any node starts: a bad file ends the launch with its one error line
        specs = _apply_overrides(specs, apply_params_file(specs, params_file))
    # First, so every process started below (Interbotix's too: their Fast DDS 2.6 reads the same file) inherits it.
    profile_env = fastdds_profile_env(context.launch_configurations.get("fastdds_profile", ""),
                                      get_package_share_directory("postbc"))
    actions = [SetEnvironmentVariable(name, value) for name, value in profile_env.items()]
    if settings.backend == "interbotix":
        pkg, rel = XSARM_CONTROL
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(f"{get_package_share_directory(pkg)}/{rel}"),
            launch_arguments={"robot_model": settings.robot_model, "use_rviz": "false"}.items()))
    watch = _ExitWatch([n.name for n in specs])
    for n in specs:
        node = Node(package=n.package, executable=n.executable, name=n.name, output="screen", emulate_tty=True,
                    parameters=[launch_parameters(n)])
        actions += [
            RegisterEventHandler(OnProcessIO(target_action=node,
                                             on_stderr=lambda ev, name=n.name: watch.on_stderr(name, ev))),
            RegisterEventHandler(OnProcessExit(target_action=node,
                                               on_exit=lambda ev, ctx, name=n.name: watch.on_exit(name, ev, ctx))),
            node,
        ]
    return actions
