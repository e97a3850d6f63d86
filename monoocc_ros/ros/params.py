"""The node's parameters: declared once here with description, type and range.

``config/monoocc.yaml`` sets them; :func:`declare_parameters` declares every one on a node
(model-dependent ones without a default, so a missing value fails at configure time), and
:func:`read_parameters` turns the node's values into a checked :class:`NodeParams`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)

from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from monoocc_ros import topics
from monoocc_ros.ros.conversions import static_transform_from_params

__all__ = [
    "NodeParams",
    "ParameterError",
    "parameter_names",
    "declare_parameters",
    "read_parameters",
    "check_parameter",
    "on_set_parameters",
]

PRECISIONS = ("fp32", "fp16", "bf16")
INPUT_QOS = ("sensor_data", "reliable")
IMAGE_TRANSPORTS = ("raw", "compressed")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")

# Velodyne/grid axes (x forward, y left, z up) -> camera optical axes (x right, y down, z forward):
# the rotation of a camera looking along the grid's x axis; KITTI-like setups pass their own.
DEFAULT_STATIC_ROTATION_XYZW = [0.5, -0.5, 0.5, 0.5]


class ParameterError(ValueError):
    """A parameter is missing or has a bad value; the text names it and says why."""


@dataclass(frozen=True)
class NodeParams:
    """Checked parameter values (see config/monoocc.yaml for the meaning of each)."""

    checkpoint_path: str
    config_name: str
    device: str
    precision: str
    grid_frame: str
    camera_frame: str
    image_transport: str
    input_qos: str
    publish_confidence: bool
    cloud_rate_hz: float
    markers_rate_hz: float
    markers_alpha: float
    markers_max_voxels: int
    tf_timeout_s: float
    static_T_cam_grid: np.ndarray
    processing_budget_ms: float
    warmup_image_size: tuple[int, int]
    autostart: bool


def _d(description: str, *, read_only: bool = False, float_range=None, int_range=None, dynamic_typing=False):
    desc = ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=dynamic_typing)
    if float_range is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)]
    if int_range is not None:
        desc.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return desc


# name -> (default or None for "must be given", descriptor, type when default is None)
_SPECS: dict[str, tuple[object, ParameterDescriptor, Parameter.Type | None]] = {
    "checkpoint_path": (
        None,
        _d("Project checkpoint (.pt) of the student model; required, no default.", read_only=True),
        Parameter.Type.STRING,
    ),
    "config_name": (
        None,
        _d(
            "Model config the checkpoint must have been trained with (e.g. monoocc_s); "
            "'' accepts any. Required so a wrong checkpoint fails at configure.",
            read_only=True,
        ),
        Parameter.Type.STRING,
    ),
    "device": ("cpu", _d("Torch device: cpu, cuda or cuda:N.", read_only=True), None),
    "precision": ("fp32", _d("Inference precision: fp32, fp16 or bf16.", read_only=True), None),
    "grid_frame": (topics.GRID_FRAME, _d("Frame of the output grid (TF target of the camera).", read_only=True), None),
    "camera_frame": (
        "",
        _d("Camera optical frame; '' uses the image header's frame_id.", read_only=True),
        None,
    ),
    "image_transport": (
        "raw",
        _d("raw: ~/input/image is sensor_msgs/Image; compressed: sensor_msgs/CompressedImage.", read_only=True),
        None,
    ),
    "input_qos": (
        "sensor_data",
        _d("Input QoS: sensor_data (best effort, depth 1) or reliable (depth 1).", read_only=True),
        None,
    ),
    "publish_confidence": (False, _d("Compute and publish per-voxel confidence.", read_only=True), None),
    "cloud_rate_hz": (
        10.0,
        _d("Max rate of ~/output/occupied_voxels [Hz]; 0 = off.", float_range=(0.0, 100.0)),
        None,
    ),
    "markers_rate_hz": (
        2.0,
        _d("Max rate of ~/output/markers [Hz], built only when subscribed; 0 = off.", float_range=(0.0, 30.0)),
        None,
    ),
    "markers_alpha": (1.0, _d("Marker transparency.", float_range=(0.0, 1.0)), None),
    "markers_max_voxels": (
        200000,
        _d("Cap on the cubes in ~/output/markers (evenly subsampled); 0 = no cap.", int_range=(0, 2097152)),
        None,
    ),
    "tf_timeout_s": (
        0.1,
        _d("How long a frame waits for its camera-from-grid TF before it is dropped [s].", float_range=(0.0, 5.0)),
        None,
    ),
    "static_T_cam_grid.translation": (
        [0.0, 0.0, 0.0],
        _d("Fallback grid->camera translation [m] when tf2_ros is not installed.", read_only=True),
        None,
    ),
    "static_T_cam_grid.rotation_xyzw": (
        DEFAULT_STATIC_ROTATION_XYZW,
        _d("Fallback grid->camera rotation, unit quaternion x y z w.", read_only=True),
        None,
    ),
    "static_T_cam_grid.matrix": (
        [0.0],
        _d("Fallback grid->camera as 16 row-major values; [0.0] = use translation + rotation.", read_only=True),
        None,
    ),
    "processing_budget_ms": (
        100.0,
        _d("Per-frame processing time above which /diagnostics warns [ms].", float_range=(1.0, 10000.0)),
        None,
    ),
    "warmup_image_size": (
        [370, 1226],
        _d("Image height, width of the warm-up inference at configure; [0, 0] = none.", read_only=True),
        None,
    ),
    "autostart": (True, _d("Configure and activate at start-up (plain, non-managed use).", read_only=True), None),
}


def parameter_names() -> tuple[str, ...]:
    """Every parameter of the node, in declaration order."""
    return tuple(_SPECS)


def declare_parameters(node) -> None:
    """Declare every parameter on ``node`` (values from --params-file override the defaults)."""
    for name, (default, descriptor, ptype) in _SPECS.items():
        if default is None:
            node.declare_parameter(name, ptype, descriptor)
        else:
            node.declare_parameter(name, default, descriptor)


def check_parameter(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for ``name``, or None when it is (ranges aside)."""
    if name == "checkpoint_path" and not str(value):
        return "checkpoint_path is empty: give the student checkpoint (.pt)"
    if name == "device" and not _DEVICE_RE.match(str(value)):
        return f"device {value!r} must be cpu, cuda or cuda:N"
    if name == "precision" and value not in PRECISIONS:
        return f"precision {value!r} must be one of {', '.join(PRECISIONS)}"
    if name == "input_qos" and value not in INPUT_QOS:
        return f"input_qos {value!r} must be one of {', '.join(INPUT_QOS)}"
    if name == "image_transport" and value not in IMAGE_TRANSPORTS:
        return f"image_transport {value!r} must be one of {', '.join(IMAGE_TRANSPORTS)}"
    if name == "grid_frame" and not str(value):
        return "grid_frame must not be empty"
    if name == "warmup_image_size" and (len(value) != 2 or min(value) < 0):
        return f"warmup_image_size must be [height, width] >= 0, got {list(value)}"
    return None


def on_set_parameters(params) -> SetParametersResult:
    """Parameter callback: reject values :func:`check_parameter` refuses, with the reason."""
    for param in params:
        reason = check_parameter(param.name, param.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def read_parameters(node) -> NodeParams:
    """The node's current values, checked.

    Raises:
        ParameterError: a required parameter is unset, or a value is invalid.
    """
    values = {}
    for name in _SPECS:
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = None
        if value is None:
            raise ParameterError(
                f"parameter '{name}' is required and not set: {_SPECS[name][1].description} "
                "Set it in the params file (config/monoocc.yaml) or with -p."
            )
        reason = check_parameter(name, value)
        if reason is not None:
            raise ParameterError(f"parameter '{name}': {reason}")
        values[name] = value
    matrix = list(values["static_T_cam_grid.matrix"])
    if matrix == [0.0]:
        matrix = []
    try:
        static_T = static_transform_from_params(
            values["static_T_cam_grid.translation"], values["static_T_cam_grid.rotation_xyzw"], matrix
        )
    except ValueError as err:
        raise ParameterError(f"parameters 'static_T_cam_grid.*': {err}") from err
    return NodeParams(
        checkpoint_path=values["checkpoint_path"],
        config_name=values["config_name"],
        device=values["device"],
        precision=values["precision"],
        grid_frame=values["grid_frame"],
        camera_frame=values["camera_frame"],
        image_transport=values["image_transport"],
        input_qos=values["input_qos"],
        publish_confidence=bool(values["publish_confidence"]),
        cloud_rate_hz=float(values["cloud_rate_hz"]),
        markers_rate_hz=float(values["markers_rate_hz"]),
        markers_alpha=float(values["markers_alpha"]),
        markers_max_voxels=int(values["markers_max_voxels"]),
        tf_timeout_s=float(values["tf_timeout_s"]),
        static_T_cam_grid=static_T,
        processing_budget_ms=float(values["processing_budget_ms"]),
        warmup_image_size=(int(values["warmup_image_size"][0]), int(values["warmup_image_size"][1])),
        autostart=bool(values["autostart"]),
    )
