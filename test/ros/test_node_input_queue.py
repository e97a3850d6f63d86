"""No frame vanishes: with the default input parameters every frame published to the node over
real rclpy/Fast DDS is either processed or counted as dropped, even in a burst while inference runs."""

from __future__ import annotations

import time

import numpy as np
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from monoocc_ros.ros.node import NODE_NAME, MonoOccNode
from ros_spin import spinning

H, W = 64, 192
BURST = 100
MIN_INFER_S = 0.3


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def test_burst_while_busy_every_frame_processed_or_counted(ros_domain, tiny_checkpoint, monkeypatch):
    import rclpy

    # default input_qos and input_queue_depth: only what the test needs is set
    node = MonoOccNode(
        parameter_overrides=[
            Parameter("checkpoint_path", value=str(tiny_checkpoint)),
            Parameter("device", value="cpu"),
            Parameter("precision", value="fp32"),
            Parameter("warmup_image_size", value=[0, 0]),
        ]
    )
    tester = rclpy.create_node("monoocc_burst_tester")
    base = f"/{NODE_NAME}"
    publisher_qos = QoSProfile(depth=BURST, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = tester.create_publisher(Image, f"{base}/input/image", publisher_qos)
    info_pub = tester.create_publisher(CameraInfo, f"{base}/input/camera_info", publisher_qos)
    with spinning(node, tester):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert _wait(lambda: image_pub.get_subscription_count() == 1 and info_pub.get_subscription_count() == 1, 20)
        # keep inference busy for at least MIN_INFER_S a frame, whatever the CPU
        predict = node.predictor.predict

        def slow_predict(*args, **kwargs):
            start = time.monotonic()
            out = predict(*args, **kwargs)
            time.sleep(max(0.0, MIN_INFER_S - (time.monotonic() - start)))
            return out

        monkeypatch.setattr(node.predictor, "predict", slow_predict)
        info = CameraInfo(height=H, width=W, k=[120.0, 0, W / 2, 0, 120.0, H / 2, 0, 0, 1], distortion_model="plumb_bob")
        info_pub.publish(info)
        time.sleep(0.1)
        rgb = np.random.default_rng(0).integers(0, 256, size=(H, W, 3), dtype=np.uint8).tobytes()
        for i in range(BURST):  # back to back: the node's callback cannot take them one by one
            msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=rgb)
            msg.header.stamp.sec, msg.header.frame_id = 10 + i, "camera_optical"
            image_pub.publish(msg)
        stats = node.stats

        def settled():
            accounted = stats.processed + stats.dropped + stats.total_rejected + stats.tf_failed
            return accounted >= BURST and node._pending is None

        assert _wait(settled, 300.0), vars(stats)
        time.sleep(0.5)  # nothing more may turn up
        assert stats.total_rejected == 0 and stats.tf_failed == 0, vars(stats)
        assert stats.processed + stats.dropped == BURST, vars(stats)
        assert stats.received == BURST and stats.lost == 0, vars(stats)
        assert 1 <= stats.processed < BURST  # inference was busy: most frames were skipped, and counted
