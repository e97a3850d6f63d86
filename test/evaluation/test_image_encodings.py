"""Every path decodes images with the node's decoder: a bag recorded in bgra8 (or 16-bit) evaluates
offline to exactly the numbers of the same bag in rgb8."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monoocc_ros import topics
from monoocc_ros.data.bag_io import read_bag_frames
from monoocc_ros.msgs.bagtypes import typestore


@pytest.mark.parametrize("encoding", ["bgra8", "bgr16"])
def test_bag_in_another_encoding_evaluates_offline_like_rgb8(encoding, gt_bag, tiny_checkpoint, rewrite_bag, eval_cli, tmp_path):
    store = typestore()

    def recode(topic, t, raw):
        if topic == topics.IMAGE:
            msg = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
            rgb = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
            if encoding == "bgra8":
                pixels = np.concatenate([rgb[:, :, ::-1], np.full_like(rgb[:, :, :1], 255)], axis=2)
                msg.step = msg.width * 4
            else:  # 16 bit, big-endian, as some drivers send: v * 256 scales back (/ 256) to v exactly
                pixels = (rgb[:, :, ::-1].astype(np.uint16) * 256).astype(">u2").view(np.uint8)
                msg.step, msg.is_bigendian = msg.width * 6, 1
            msg.encoding = encoding
            msg.data = np.ascontiguousarray(pixels).reshape(-1)
            raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
        yield topic, t, raw

    bag = rewrite_bag(gt_bag, tmp_path / encoding, recode)
    index = read_bag_frames(bag, require_ground_truth=True)
    assert len(index) == 2 and not [p for p in index.problems if "skipped" in p], index.problems
    for frame, ref in zip(index, read_bag_frames(gt_bag, require_ground_truth=True)):
        np.testing.assert_array_equal(frame.image, ref.image)
    reports = {}
    for name, b in (("rgb8", gt_bag), (encoding, bag)):
        assert eval_cli(["eval", str(b), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / name), "--no-progress"]) == 0
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert reports[encoding]["frames"] == {"ground_truth": 2, "evaluated": 2, "failed": 0}
    assert reports[encoding]["confusion"] == reports["rgb8"]["confusion"]
