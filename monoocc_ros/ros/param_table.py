"""The node's parameters as one declarative table: name -> default, description, type and range.

One entry per parameter, in declaration order; :mod:`monoocc_ros.ros.params` declares, checks
and reads them from here, ``config/monoocc.yaml`` sets them and the launch test checks both
name the same parameters. Kept whole on purpose: a table that reads top to bottom is easier to
keep in step with the YAML than pieces spread over modules.
"""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from monoocc_ros import topics

__all__ = ["DEFAULT_STATIC_ROTATION_XYZW", "SPECS"]

# Velodyne/grid axes (x forward, y left, z up) -> camera optical axes (x right, y down, z forward):
# the rotation of a camera looking along the grid's x axis; KITTI-like setups pass their own.
DEFAULT_STATIC_ROTATION_XYZW = [0.5, -0.5, 0.5, 0.5]


def _d(description: str, *, read_only: bool = False, float_range=None, int_range=None, dynamic_typing=False):
    desc = ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=dynamic_typing)
    if float_range is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)]
    if int_range is not None:
        desc.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return desc


# name -> (default or None for "must be given", descriptor, type when default is None)
SPECS: dict[str, tuple[object, ParameterDescriptor, Parameter.Type | None]] = {
    "checkpoint_path": (
        None,
        _d("Project checkpoint (.pt) of the student model; required, no default.", read_only=True),
        Parameter.Type.STRING,
    ),
    # The model is built from the config stored in the checkpoint; this only checks its name.
    "config_name": (
        "",
        _d(
            "Model config the checkpoint must have been trained with (e.g. monoocc_s), so a wrong "
            "checkpoint fails at configure; '' accepts any (the model config comes from the checkpoint).",
            read_only=True,
        ),
        None,
    ),
    "device": (
        "auto",
        _d("Torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.", read_only=True),
        None,
    ),
    "precision": (
        "auto",
        _d("Inference precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.", read_only=True),
        None,
    ),
    "backend": (
        "eager",
        _d("Inference backend: eager (PyTorch), onnxruntime, tensorrt (CUDA) or aotinductor; the ahead-of-time ones "
           "compile the model's dense stages for warmup_image_size, cached next to the checkpoint (aotinductor: "
           "built by `monoocc export --backend aotinductor`, never at start-up). Supported precisions: eager fp32/bf16 "
           "(+fp16 on CUDA), onnxruntime fp32, tensorrt fp16/fp32, aotinductor fp32/bf16.", read_only=True),
        None,
    ),
    "channels_last": (False, _d("Run the convolutional trunk in channels-last layout (eager).", read_only=True), None),
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
        _d("Input QoS reliability: sensor_data (best effort) or reliable; history depth input_queue_depth.",
           read_only=True),
        None,
    ),
    # Deep enough that the middleware never overwrites a frame the node has not seen: the image
    # callback only stores the frame, and the node counts the frames it replaces as drops.
    "input_queue_depth": (
        100,
        _d("History depth of the image and CameraInfo subscriptions (frames held by the middleware until the "
           "node's callback takes them).", read_only=True, int_range=(1, 1000)),
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
    # The model caches the voxel projections of one camera: warmed with a generic camera, the
    # first real frame computes them (+200 ms at 185x613 on one CPU thread, dropping frames).
    "warmup_camera_k": (
        [0.0],
        _d("Intrinsics K (9 row-major values, as the camera's CameraInfo gives them at warmup_image_size) "
           "for a second warm-up at configure that caches this camera's geometry for the first frame; "
           "[0.0] = none. Needs the static extrinsic (without tf2_ros the pose is static_T_cam_grid.*).",
           read_only=True),
        None,
    ),
    "autostart": (True, _d("Configure and activate at start-up (plain, non-managed use).", read_only=True), None),
    "release_on_deactivate": (
        False,
        _d("Free the model's device memory on deactivate (activate then reloads the checkpoint)."),
        None,
    ),
    # --- persistent semantic map (monoocc_ros.ros.map_publisher) ---
    "map.enabled": (
        False,
        _d("Fuse every prediction into a rolling semantic map in map.frame and publish ~/output/map/*.",
           read_only=True),
        None,
    ),
    "map.frame": ("odom", _d("Fixed frame of the map (tf2: map.frame <- grid_frame at the image stamp).",
                             read_only=True), None),
    "map.size": ([512, 512, 32], _d("Voxels of the rolling window (x, y, z) at the grid's 0.2 m; memory is fixed "
                                    "by it: 12 bytes per voxel.", read_only=True), None),
    "map.grid_rate_hz": (1.0, _d("Max rate of ~/output/map/occupancy [Hz]; 0 = off.", float_range=(0.0, 30.0)), None),
    "map.cloud_rate_hz": (1.0, _d("Max rate of ~/output/map/occupied_voxels [Hz]; 0 = off.",
                                  float_range=(0.0, 30.0)), None),
    "map.costmap_rate_hz": (2.0, _d("Max rate of ~/output/map/costmap [Hz]; 0 = off.", float_range=(0.0, 30.0)),
                            None),
    "map.drivable_classes": (["road", "parking"], _d("Classes the costmap treats as free ground.", read_only=True),
                             None),
    "map.obstacle_band_m": ([-1.9, 0.6], _d("Heights (low, high) above the grid origin where any other occupied "
                                            "voxel is a costmap obstacle [m].", read_only=True), None),
    "map.movable_tau_s": (2.0, _d("Decay time constant of movable classes (car, person, ...) out of view [s].",
                                  read_only=True, float_range=(0.01, 3600.0)), None),
    "map.odom_tolerance_s": (0.05, _d("Without tf2: max stamp difference between an image and the Odometry "
                                      "pose used for it [s].", float_range=(0.0, 1.0)), None),
}
