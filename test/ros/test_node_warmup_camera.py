"""warmup_camera_k: the node's warm-up caches the camera's voxel projections for the first frame.

The model keeps the projections of the last camera it saw; warmed with a generic camera, the
first real frame computed them (+200 ms at 185x613 on one thread, two dropped frames at 10 Hz).
"""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

import monoocc_ros.models.proposals as proposals
import monoocc_ros.models.voxel_transformer as voxel_transformer
import monoocc_ros.ros.node as node_module
from monoocc_ros.ros.node import MonoOccNode
from ros_spin import RecordingLogger

HW = (64, 192)
K = [120.0, 0.0, 96.0, 0.0, 120.0, 32.0, 0.0, 0.0, 1.0]
# grid (x forward, y left, z up) -> camera optical frame, 1.7 m above the grid origin
T = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.7, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.fixture
def geometry_calls(monkeypatch):
    """Counts of the camera geometry computations (depth-lift index, voxel projection)."""
    calls = {"lift": 0, "project": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(proposals, "depth_lift_index", counted("lift", proposals.depth_lift_index))
    monkeypatch.setattr(voxel_transformer, "project_voxels", counted("project", voxel_transformer.project_voxels))
    # the static extrinsic is what the camera warm-up uses (tf2_ros gives the pose only per frame)
    monkeypatch.setattr(node_module, "tf2_available", lambda: False)
    return calls


def _node(checkpoint, **params) -> MonoOccNode:
    values = {"checkpoint_path": str(checkpoint), "device": "cpu", "warmup_image_size": list(HW),
              "static_T_cam_grid.matrix": T, **params}
    return MonoOccNode(
        node_name="monoocc_warmup_node", parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
    )


def _first_frame_geometry(node, calls: dict) -> dict:
    """Geometry computations of a first frame of camera K after configure."""
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    before = dict(calls)
    image = np.random.default_rng(0).integers(0, 256, (*HW, 3), dtype=np.uint8)
    node.predictor.predict(image, np.reshape(K, (3, 3)), node._transforms.T_cam_grid)
    return {name: calls[name] - before[name] for name in calls}


@pytest.mark.parametrize("camera_warmup", [True, False])
def test_first_frame_finds_the_camera_geometry_cached(ros_domain, tiny_checkpoint, geometry_calls, camera_warmup):
    node = _node(tiny_checkpoint, **({"warmup_camera_k": K} if camera_warmup else {}))
    try:
        computed = _first_frame_geometry(node, geometry_calls)
    finally:
        node.trigger_cleanup()
        node.destroy_node()
    if camera_warmup:
        assert computed == {"lift": 0, "project": 0}
    else:  # the generic warm-up camera: the first frame computes its own geometry
        assert computed["lift"] == 1 and computed["project"] >= 1


@pytest.mark.parametrize(
    "value, words",
    [([1.0, 2.0], "must be 9 row-major values of K"), ([0.0, 0.0, 96.0, 0.0, 120.0, 32.0, 0.0, 0.0, 1.0], "focal")],
)
def test_bad_warmup_camera_k_fails_configure_in_one_line_naming_it(ros_domain, tiny_checkpoint, value, words):
    node = _node(tiny_checkpoint, warmup_camera_k=value)
    logger = RecordingLogger()
    node.get_logger = lambda: logger
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert len(logger.errors) == 1 and "\n" not in logger.errors[0]
        assert "warmup_camera_k" in logger.errors[0] and words in logger.errors[0], logger.errors
    finally:
        node.destroy_node()
