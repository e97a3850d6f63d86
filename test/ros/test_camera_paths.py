"""One camera rule on every path: for a CameraInfo with K != P (a rectified stream), the node, the
bag dataset and offline evaluation project with the same intrinsics, P[:, :3]."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo

from monoocc_ros import topics
from monoocc_ros.data.bag_dataset import BagDataset
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.msgs.bagtypes import typestore
from monoocc_ros.evaluation.offline import OfflineConfig, evaluate_offline
from test_node import Harness

# the raw (unrectified) camera K, and the rectified P the bag's images are in
RAW_K = np.array([[640.0, 0.0, 600.0], [0.0, 650.0, 190.0], [0.0, 0.0, 1.0]])
D = [-0.37, 0.2, 0.001, 0.0, -0.07]


class RecordingPredictor:
    """Stands in for the predictor: records the intrinsics it is given, predicts nothing."""

    def __init__(self):
        self.Ks: list[np.ndarray] = []

    def predict(self, image, K, T_cam_grid, proposals=None):
        self.Ks.append(np.array(K, dtype=np.float64))
        raise ValueError("recorded")


@pytest.fixture(scope="module")
def rectified_bag(synthetic_kitti, tmp_path_factory) -> Path:
    """Frame 0 of the generated street with its CameraInfo rewritten: K = RAW_K, D = plumb_bob, P as written."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from monoocc_ros.data.converter import convert_sequence

    base = tmp_path_factory.mktemp("rect")
    convert_sequence(synthetic_kitti, "00", base / "src", frames=range(0, 1), progress=False)
    store = typestore()
    with Reader(base / "src") as reader, Writer(base / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for conn, t, raw in reader.messages():
            if conn.topic not in conns:
                conns[conn.topic] = writer.add_connection(conn.topic, conn.msgtype, typestore=store)
            if conn.topic == topics.CAMERA_INFO:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                msg.k = RAW_K.ravel().copy()
                msg.d = np.array(D)
                msg.distortion_model = "plumb_bob"
                raw = store.serialize_cdr(msg, conn.msgtype)
            writer.write(conns[conn.topic], t, raw)
    return base / "bag"


def test_node_dataset_and_offline_evaluation_use_the_same_intrinsics(rectified_bag, ros_domain, tiny_checkpoint, tmp_path):
    from rosbags.rosbag2 import Reader

    store = typestore()
    with Reader(rectified_bag) as reader:
        info_raw = next(raw for c, _, raw in reader.messages() if c.topic == topics.CAMERA_INFO)
    bag_info = store.deserialize_cdr(info_raw, "sensor_msgs/msg/CameraInfo")
    P = np.asarray(bag_info.p).reshape(3, 4)
    assert not np.allclose(P[:, :3], RAW_K)  # the premise: K != P
    want = P[:, :3]

    # bag dataset (training) and offline evaluation
    index = read_bag_frames(rectified_bag, require_ground_truth=True)
    assert any("non-zero distortion" in p and "taken as rectified" in p for p in index.problems), index.problems
    sample = BagDataset([rectified_bag])[0]
    np.testing.assert_allclose(sample["K"].numpy(), want, rtol=1e-6)
    spy = RecordingPredictor()
    evaluate_offline(rectified_bag, spy, tmp_path / "eval", OfflineConfig(progress=False), checkpoint={})
    assert len(spy.Ks) == 1
    np.testing.assert_allclose(spy.Ks[0], want)

    # the node, over real rclpy, fed the bag's image and CameraInfo
    frame = next(iter(index))
    h = Harness(tiny_checkpoint)
    try:
        assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        h.connect()
        node_spy = RecordingPredictor()
        h.node.predictor.predict = node_spy.predict
        info = CameraInfo(height=int(bag_info.height), width=int(bag_info.width), distortion_model="plumb_bob",
                          k=RAW_K.ravel().tolist(), p=P.ravel().tolist(), d=D)
        info.header.frame_id = "camera_optical"
        for n in range(2):
            h.send(frame.image, 1_000_000_000 + n, info=info)
            assert h.wait(lambda: len(node_spy.Ks) == n + 1, timeout_s=60)
        for K in node_spy.Ks:
            np.testing.assert_allclose(K, want)
        # distortion on an image taken as rectified: warned once, counted every time
        assert h.wait(lambda: any("non-zero distortion" in log.msg for log in h.logs))
        time.sleep(0.2)
        assert sum("non-zero distortion" in log.msg for log in h.logs if log.level == Log.WARN) == 1
        assert h.node._camera_info_reader().distorted == 2
        # a CameraInfo of another camera is refused with one counted reason
        before = h.node.stats.rejected["bad_camera_info"]
        info.header.frame_id = "other_camera"
        h.send(frame.image, 3_000_000_000, info=info)
        assert h.wait(lambda: h.node.stats.rejected["bad_camera_info"] == before + 1, timeout_s=60)
        assert "frame_id 'other_camera' is not the image's 'camera_optical'" in h.node.last_warning["bad_camera_info"]
        assert len(node_spy.Ks) == 2
    finally:
        h.close()
