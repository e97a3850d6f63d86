"""Launch the MonoOcc semantic occupancy node (and optionally RViz).

    ros2 launch monoocc_ros monoocc.launch.py checkpoint:=/path/student.pt \
        image:=/camera/image_raw camera_info:=/camera/camera_info rviz:=true

Without ``launch``/``ros2`` (PyPI-only ROS), run the node directly instead:

    python -m monoocc_ros.ros.node --ros-args --params-file config/monoocc.yaml \
        -p checkpoint_path:=/path/student.pt \
        -r ~/input/image:=/camera/image_raw -r ~/input/camera_info:=/camera/camera_info
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def _share_dir() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("monoocc_ros"))
    except (ImportError, LookupError):
        # Run from a source checkout.
        return Path(__file__).resolve().parents[1]


def generate_launch_description() -> LaunchDescription:
    share = _share_dir()
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    checkpoint = LaunchConfiguration("checkpoint")
    node_params = [params_file, {"use_sim_time": use_sim_time, "checkpoint_path": checkpoint}]
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file", default_value=str(share / "config" / "monoocc.yaml"), description="Node parameters"
            ),
            # No default: the node cannot run without a model, so launch refuses to start without it.
            DeclareLaunchArgument("checkpoint", description="Student checkpoint (.pt), required"),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
            DeclareLaunchArgument("image", default_value="/camera/image_raw", description="Input image topic"),
            DeclareLaunchArgument(
                "camera_info", default_value="/camera/camera_info", description="Input CameraInfo topic"
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
            DeclareLaunchArgument("rviz", default_value="false", description="Start RViz with config/monoocc.rviz"),
            Node(
                package="monoocc_ros",
                executable="monoocc_node",
                name="monoocc_node",
                namespace=LaunchConfiguration("namespace"),
                parameters=node_params,
                remappings=[
                    ("~/input/image", LaunchConfiguration("image")),
                    ("~/input/camera_info", LaunchConfiguration("camera_info")),
                ],
                output="screen",
                emulate_tty=True,
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", str(share / "config" / "monoocc.rviz")],
                parameters=[{"use_sim_time": use_sim_time}],
                condition=IfCondition(PythonExpression(["'", LaunchConfiguration("rviz"), "' == 'true'"])),
                output="screen",
            ),
        ]
    )
