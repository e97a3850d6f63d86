"""The node runs the backend its parameters name and says which one in /diagnostics."""

from __future__ import annotations

from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from monoocc_ros.ros.node import MonoOccNode


def _node(checkpoint, backend: str) -> MonoOccNode:
    return MonoOccNode(
        node_name=f"monoocc_{backend}_node",
        parameter_overrides=[
            Parameter("checkpoint_path", value=str(checkpoint)),
            Parameter("device", value="cpu"),
            Parameter("backend", value=backend),
            Parameter("warmup_image_size", value=[64, 192]),
        ],
    )


def test_onnxruntime_backend_is_built_next_to_the_checkpoint_and_reported(ros_domain, tiny_checkpoint):
    node = _node(tiny_checkpoint, "onnxruntime")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.predictor.backend_name == "onnxruntime"
        assert list(tiny_checkpoint.parent.glob(f"{tiny_checkpoint.stem}.*.onnxruntime.64x192.onnx"))
        values = {kv.key: kv.value for kv in node._diagnostics().status[0].values}
        assert values["backend"] == "onnxruntime"
    finally:
        node.trigger_cleanup()
        node.destroy_node()


def test_tensorrt_without_cuda_fails_configure(ros_domain, tiny_checkpoint):
    node = _node(tiny_checkpoint, "tensorrt")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.predictor is None
    finally:
        node.destroy_node()
