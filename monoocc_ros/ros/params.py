"""The node's parameters: declared, checked and read (the table of names, defaults, descriptions,
types and ranges is :data:`monoocc_ros.ros.param_table.SPECS`).

``config/monoocc.yaml`` sets them; :func:`declare_parameters` declares every one on a node
(``checkpoint_path`` without a default, so a missing value fails at configure time; a value of
the wrong type or range fails at once, in one line), and :func:`read_parameters` turns the
node's values into a checked :class:`NodeParams`, refusing names the node does not have.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import SetParametersResult

from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.parameter import Parameter

from monoocc_ros.camera import check_intrinsics
from monoocc_ros.inference.backends import BACKENDS  # imports no torch: the parameter check stays light
from monoocc_ros.ros.conversions import static_transform_from_params
from monoocc_ros.ros.param_table import SPECS

__all__ = [
    "NodeParams",
    "ParameterError",
    "parameter_names",
    "declare_parameters",
    "read_parameters",
    "check_parameter",
    "on_set_parameters",
    "coerce_parameters",
    "unknown_parameters",
    "dropped_command_line_values",
    "normalize_frame_id",
    "resolve_device",
    "double_list_value",
]

PRECISIONS = ("fp32", "fp16", "bf16")
# "auto" (device and precision): cuda + fp16 where CUDA is available, else cpu + fp32.
AUTO = "auto"
INPUT_QOS = ("sensor_data", "reliable")
IMAGE_TRANSPORTS = ("raw", "compressed")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

class ParameterError(ValueError):
    """A parameter is missing or has a bad value; the text names it and says why."""


@dataclass(frozen=True)
class NodeParams:
    """Checked parameter values (see config/monoocc.yaml for the meaning of each)."""

    checkpoint_path: str  # ~ expanded
    config_name: str
    device: str
    precision: str
    backend: str
    channels_last: bool
    grid_frame: str  # without a leading '/'
    camera_frame: str
    image_transport: str
    input_qos: str
    input_queue_depth: int
    publish_confidence: bool
    cloud_rate_hz: float
    markers_rate_hz: float
    markers_alpha: float
    markers_max_voxels: int
    tf_timeout_s: float
    static_T_cam_grid: np.ndarray | None  # (4, 4); None when tf2 gives the pose (not checked then)
    processing_budget_ms: float
    warmup_image_size: tuple[int, int]
    warmup_camera_k: np.ndarray | None  # (3, 3) float64; None: no camera warm-up
    autostart: bool
    release_on_deactivate: bool


# Declared by rclpy itself on every node; a params file may set them.
_RCLPY_PREFIXES = ("use_sim_time", "start_type_description_service", "qos_overrides.")


def double_list_value(values) -> str:
    """A double-array parameter value for ``-p name:=VALUE``: every item a float, as ROS refuses mixed lists.

    >>> double_list_value([[1, 0], [0.5, 2]])
    '[1.0, 0.0, 0.5, 2.0]'
    """
    return "[" + ", ".join(repr(float(v)) for v in np.ravel(values)) + "]"


def parameter_names() -> tuple[str, ...]:
    """Every parameter of the node, in declaration order."""
    return tuple(SPECS)


def _declared_type(name: str) -> Parameter.Type:
    default, _, ptype = SPECS[name]
    return ptype if default is None else Parameter.Type.from_parameter_value(default)


def _type_word(ptype: Parameter.Type) -> str:
    return ptype.name.lower().replace("_array", " list")


def _coerced(param: Parameter) -> Parameter:
    """An integer (list) given for a double (list) parameter as a double: YAML's `1` for `1.0`."""
    if param.name not in SPECS:
        return param
    want = _declared_type(param.name)
    if want == Parameter.Type.DOUBLE and param.type_ == Parameter.Type.INTEGER:
        return Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
    if want == Parameter.Type.DOUBLE_ARRAY and param.type_ == Parameter.Type.INTEGER_ARRAY:
        return Parameter(param.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in param.value])
    return param


def coerce_parameters(params: list[Parameter]) -> list[Parameter]:
    """Pre-set callback: ``ros2 param set`` of an integer on a double parameter sets the double."""
    return [_coerced(p) for p in params]


def _declare_error(name: str, given: Parameter | None, err: ParameterException) -> str:
    descriptor = SPECS[name][1]
    value = given.value if given is not None else None
    if given is not None and given.type_ != _declared_type(name):
        return (
            f"parameter '{name}' must be of type {_type_word(_declared_type(name))}, "
            f"got {value!r} (type {_type_word(given.type_)})"
        )
    for r in list(descriptor.floating_point_range) + list(descriptor.integer_range):
        if value is not None and not r.from_value <= value <= r.to_value:
            return f"parameter '{name}' = {value!r} is out of range [{r.from_value}, {r.to_value}]"
    return f"parameter '{name}': {err}".replace("\n", " ")


def declare_parameters(node) -> None:
    """Declare every parameter on ``node`` (values from --params-file and -p override the defaults).

    Raises:
        ParameterError: a given value has the wrong type or is out of range (one line naming it).
    """
    # rclpy keeps the -p / --params-file values here and has no public accessor; an integer
    # for a double is what users write (tf_timeout_s: 1), so it is accepted as that double.
    overrides = node._parameter_overrides
    for name, (default, descriptor, ptype) in SPECS.items():
        if name in overrides:
            overrides[name] = _coerced(overrides[name])
        try:
            if default is None:
                node.declare_parameter(name, ptype, descriptor)
            else:
                node.declare_parameter(name, default, descriptor)
        except ParameterException as err:
            raise ParameterError(_declare_error(name, overrides.get(name), err)) from None


def dropped_command_line_values(node, argv: list[str]) -> list[str]:
    """One line for each ``-p name:=value`` of ``argv`` that rcl dropped without a word.

    After a params file, rcl keeps the file's value when a ``-p`` value has another type
    (``-p markers_max_voxels:=1.5`` leaves 200000); the node then runs with a value the user
    did not ask for. Compares each such value with what the node ended up with.
    """
    import yaml

    given = {}
    ros_args = False
    for i, arg in enumerate(argv):
        if arg == "--ros-args":
            ros_args = True
        elif arg == "--":
            ros_args = False
        elif ros_args and arg in ("-p", "--param") and i + 1 < len(argv):
            name, sep, text = argv[i + 1].partition(":=")
            target, _, name = name.rpartition(":")  # "-p node:name:=value" sets one node only
            if sep and name in SPECS and target in ("", node.get_name()):
                given[name] = text
    problems = []
    for name, text in given.items():
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # rcl took it as a string
        param = _coerced(Parameter(name, value=value)) if value is not None else None
        if param is None or param.type_ == _declared_type(name) or param.type_ == Parameter.Type.NOT_SET:
            continue
        problems.append(
            f"parameter '{name}' must be of type {_type_word(_declared_type(name))}, got {value!r} "
            f"(type {_type_word(param.type_)}) from -p; rcl kept {node.get_parameter(name).value!r} "
            "from the params file"
        )
    return problems


def unknown_parameters(node) -> list[str]:
    """Names given to ``node`` (-p, --params-file) that it does not declare: usually typos."""
    given = node._parameter_overrides  # see declare_parameters
    return sorted(n for n in given if not node.has_parameter(n) and not n.startswith(_RCLPY_PREFIXES))


def normalize_frame_id(frame_id: str) -> str:
    """tf2 frame ids have no leading '/' (ROS 1 style '/camera_optical' is 'camera_optical')."""
    return frame_id.lstrip("/")


def resolve_device(device: str, precision: str) -> tuple[str, str]:
    """Resolve ``auto``: (cuda, fp16) where CUDA is available, else (cpu, fp32)."""
    if AUTO in (device, precision):
        import torch

        if device == AUTO:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if precision == AUTO:
            precision = "fp16" if device.startswith("cuda") else "fp32"
    return device, precision


def check_parameter(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for ``name``, or None when it is (ranges aside)."""
    if name == "checkpoint_path" and not str(value):
        return "checkpoint_path is empty: give the student checkpoint (.pt)"
    if name == "device" and not _DEVICE_RE.match(str(value)):
        return f"device {value!r} must be cpu, cuda, cuda:N or auto"
    if name == "precision" and value not in (AUTO, *PRECISIONS):
        return f"precision {value!r} must be one of {', '.join((AUTO, *PRECISIONS))}"
    if name == "backend" and value not in BACKENDS:
        return f"backend {value!r} must be one of {', '.join(BACKENDS)}"
    if name == "input_qos" and value not in INPUT_QOS:
        return f"input_qos {value!r} must be one of {', '.join(INPUT_QOS)}"
    if name == "image_transport" and value not in IMAGE_TRANSPORTS:
        return f"image_transport {value!r} must be one of {', '.join(IMAGE_TRANSPORTS)}"
    if name == "grid_frame" and not normalize_frame_id(str(value)):
        return "grid_frame must not be empty"
    if name == "warmup_image_size" and (len(value) != 2 or min(value) < 0):
        return f"warmup_image_size must be [height, width] >= 0, got {list(value)}"
    if name == "warmup_camera_k" and list(value) != [0.0] and len(value) != 9:
        return f"warmup_camera_k must be 9 row-major values of K, or [0.0] for none, got {len(value)} values"
    if name.startswith("map."):
        return _check_map_parameter(name, value)
    return None


def _check_map_parameter(name: str, value) -> str | None:
    from monoocc_ros.labels import SEMANTIC_KITTI

    if name == "map.size" and (len(value) != 3 or min(value) < 2):
        return f"map.size must be [x, y, z] voxels >= 2, got {list(value)}"
    if name == "map.drivable_classes":
        unknown = [c for c in value if c not in SEMANTIC_KITTI.names]
        if unknown:
            return f"map.drivable_classes: unknown class names {unknown} (one of {list(SEMANTIC_KITTI.names[1:])})"
    if name == "map.obstacle_band_m" and (len(value) != 2 or not value[0] < value[1]):
        return f"map.obstacle_band_m must be [low, high] with low < high, got {list(value)}"
    if name == "map.frame" and not normalize_frame_id(str(value)):
        return "map.frame must not be empty"
    return None


def on_set_parameters(params) -> SetParametersResult:
    """Parameter callback: reject values :func:`check_parameter` refuses, with the reason."""
    for param in params:
        reason = check_parameter(param.name, param.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def read_parameters(node, *, static_extrinsic: bool = True) -> NodeParams:
    """The node's current values, checked; ``static_extrinsic=False`` (tf2 gives the pose)
    leaves the unused ``static_T_cam_grid.*`` unchecked.

    Raises:
        ParameterError: a required parameter is unset, a value is invalid, or a given
            parameter is not one of the node's (a typo such as tf_timout_s).
    """
    unknown = unknown_parameters(node)
    if unknown:
        close = [difflib.get_close_matches(n, SPECS, 1) for n in unknown]
        listed = ", ".join(f"'{n}'" + (f" (did you mean '{m[0]}'?)" if m else "") for n, m in zip(unknown, close))
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {listed}: not a parameter of this node "
            "(config/monoocc.yaml lists them all)"
        )
    values = {}
    for name in SPECS:
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = None
        if value is None:
            raise ParameterError(
                f"parameter '{name}' is required and not set: {SPECS[name][1].description} "
                "Set it in the params file (config/monoocc.yaml) or with -p."
            )
        reason = check_parameter(name, value)
        if reason is not None:
            raise ParameterError(f"parameter '{name}': {reason}")
        values[name] = value
    static_T = None
    if static_extrinsic:
        matrix = list(values["static_T_cam_grid.matrix"])
        if matrix == [0.0]:
            matrix = []
        try:
            static_T = static_transform_from_params(
                values["static_T_cam_grid.translation"], values["static_T_cam_grid.rotation_xyzw"], matrix
            )
        except ValueError as err:
            raise ParameterError(f"parameters 'static_T_cam_grid.*': {err}") from err
    warmup_K = None
    if list(values["warmup_camera_k"]) != [0.0]:
        try:
            warmup_K = check_intrinsics(np.asarray(values["warmup_camera_k"], dtype=np.float64).reshape(3, 3),
                                        name="warmup_camera_k")
        except ValueError as err:
            raise ParameterError(f"parameter 'warmup_camera_k': {err}") from err
    device, precision = resolve_device(values["device"], values["precision"])
    return NodeParams(
        checkpoint_path=os.path.expanduser(values["checkpoint_path"]),
        config_name=values["config_name"],
        device=device,
        precision=precision,
        backend=values["backend"],
        channels_last=bool(values["channels_last"]),
        grid_frame=normalize_frame_id(values["grid_frame"]),
        camera_frame=normalize_frame_id(values["camera_frame"]),
        image_transport=values["image_transport"],
        input_qos=values["input_qos"],
        input_queue_depth=int(values["input_queue_depth"]),
        publish_confidence=bool(values["publish_confidence"]),
        cloud_rate_hz=float(values["cloud_rate_hz"]),
        markers_rate_hz=float(values["markers_rate_hz"]),
        markers_alpha=float(values["markers_alpha"]),
        markers_max_voxels=int(values["markers_max_voxels"]),
        tf_timeout_s=float(values["tf_timeout_s"]),
        static_T_cam_grid=static_T,
        processing_budget_ms=float(values["processing_budget_ms"]),
        warmup_image_size=(int(values["warmup_image_size"][0]), int(values["warmup_image_size"][1])),
        warmup_camera_k=warmup_K,
        autostart=bool(values["autostart"]),
        release_on_deactivate=bool(values["release_on_deactivate"]),
    )
