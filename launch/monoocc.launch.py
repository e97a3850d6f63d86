"""Launch the MonoOcc semantic occupancy node (and optionally RViz).

    ros2 launch monoocc_ros monoocc.launch.py checkpoint:=/path/student.pt \
        image:=/camera/image_raw camera_info:=/camera/camera_info rviz:=true

``ros2 launch monoocc_ros monoocc.launch.py --show-args`` lists the arguments. ``device``,
``precision`` and ``config_name`` override the params file's values only when given (the
file's defaults, ``auto``/``auto``/``""``, run on CPU-only and GPU machines alike). With
``rviz:=true`` where rviz2 is not installed, the node starts alone and one line says so.

Without ``launch``/``ros2`` (PyPI-only ROS), run the node directly instead (quote the remaps:
an unquoted ``~`` is expanded by the shell and the remap silently does nothing):

    python -m monoocc_ros.ros.node --ros-args --params-file config/monoocc.yaml \
        -p checkpoint_path:=/path/student.pt \
        -r '~/input/image:=/camera/image_raw' -r '~/input/camera_info:=/camera/camera_info'

The ``launch`` imports are inside the functions so the argument logic can be tested where
``launch`` is not installed.
"""

from pathlib import Path

# Node parameters settable from the launch line; "" (their default) keeps the params file's value.
PARAMETER_ARGUMENTS = {
    "device": "Torch device: auto, cpu, cuda or cuda:N ('' = params file, default auto)",
    "precision": "Inference precision: auto, fp32, fp16 (CUDA) or bf16 ('' = params file, default auto)",
    "config_name": "Model config the checkpoint must hold, e.g. monoocc_s ('' = params file, default: any)",
}


def _share_dir() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("monoocc_ros"))
    except (ImportError, LookupError):
        # Run from a source checkout.
        return Path(__file__).resolve().parents[1]


def launch_arguments() -> list[tuple[str, str | None, str]]:
    """(name, default or None when required, description) of every launch argument."""
    share = _share_dir()
    return [
        ("params_file", str(share / "config" / "monoocc.yaml"), "Node parameters"),
        # No default: the node cannot run without a model, so launch refuses to start without it.
        ("checkpoint", None, "Student checkpoint (.pt), required; ~ is expanded"),
        ("namespace", "", "Namespace of the node"),
        ("image", "/camera/image_raw", "Input image topic"),
        ("camera_info", "/camera/camera_info", "Input CameraInfo topic"),
        ("use_sim_time", "false", "Use /clock (bag replay)"),
        ("rviz", "false", "Start RViz with config/monoocc.rviz (skipped with a note where rviz2 is absent)"),
        *((name, "", description) for name, description in PARAMETER_ARGUMENTS.items()),
    ]


def node_parameters(values: dict[str, str]) -> list:
    """The node's ``parameters``: the params file, then what the launch line sets."""
    overrides = {
        "use_sim_time": values["use_sim_time"].strip().lower() in ("true", "1", "yes"),
        "checkpoint_path": values["checkpoint"],
    }
    overrides.update({name: values[name] for name in PARAMETER_ARGUMENTS if values[name] != ""})
    return [values["params_file"], overrides]


def rviz2_available() -> bool:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        import shutil

        return shutil.which("rviz2") is not None
    try:
        get_package_prefix("rviz2")
        return True
    except PackageNotFoundError:
        return False


def rviz_decision(rviz: str) -> tuple[bool, str | None]:
    """(start RViz, note to log): a missing rviz2 must not abort the launch and orphan the node."""
    if rviz.strip().lower() not in ("true", "1", "yes"):
        return False, None
    if rviz2_available():
        return True, None
    return False, "rviz:=true but rviz2 is not installed: starting the node without RViz"


def _launch_setup(context):
    from launch.actions import LogInfo
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in launch_arguments()}
    actions = [
        Node(
            package="monoocc_ros",
            executable="monoocc_node",
            name="monoocc_node",
            namespace=values["namespace"],
            parameters=node_parameters(values),
            remappings=[("~/input/image", values["image"]), ("~/input/camera_info", values["camera_info"])],
            output="screen",
            emulate_tty=True,
        )
    ]
    start_rviz, note = rviz_decision(values["rviz"])
    if note:
        actions.append(LogInfo(msg=note))
    if start_rviz:
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", str(_share_dir() / "config" / "monoocc.rviz")],
                parameters=[{"use_sim_time": node_parameters(values)[1]["use_sim_time"]}],
                output="screen",
            )
        )
    return actions


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [
        DeclareLaunchArgument(name, description=description)
        if default is None
        else DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in launch_arguments()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
