"""One stamp codec and one quaternion codec for rosbags and rclpy messages alike."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.stamps import split_ns, stamp_to_ns
from monoocc_ros.transforms import matrix_from_translation_quaternion, matrix_to_quaternion, quaternion_to_matrix

STAMPS_NS = [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1]


def test_stamps_round_trip_through_rosbags_and_rclpy_time_messages():
    from builtin_interfaces.msg import Time as RclpyTime

    from monoocc_ros.msgs.bagtypes import typestore
    from monoocc_ros.ros.conversions import ns_to_stamp

    RosbagsTime = typestore().types["builtin_interfaces/msg/Time"]
    for ns in STAMPS_NS:
        sec, nanosec = split_ns(ns)
        assert 0 <= nanosec < 1_000_000_000 and sec * 1_000_000_000 + nanosec == ns
        assert stamp_to_ns(RosbagsTime(sec=sec, nanosec=nanosec)) == ns
        assert stamp_to_ns(RclpyTime(sec=sec, nanosec=nanosec)) == ns
        assert stamp_to_ns(ns_to_stamp(ns)) == ns


def test_the_old_import_paths_are_the_shared_functions():
    from monoocc_ros.data import bag_io
    from monoocc_ros.msgs import bag_messages, decode
    from monoocc_ros.ros import conversions, tf

    assert bag_io.stamp_to_ns is conversions.stamp_to_ns is stamp_to_ns
    assert decode.quaternion_to_matrix is quaternion_to_matrix
    assert bag_messages.matrix_to_quaternion is matrix_to_quaternion
    assert conversions.matrix_from_translation_quaternion is tf.matrix_from_translation_quaternion
    assert conversions.matrix_from_translation_quaternion is matrix_from_translation_quaternion


def test_recorded_quaternions_are_normalised_but_typed_ones_must_be_unit():
    R = quaternion_to_matrix(0.0, 0.0, 2.0, 2.0)  # a bag's quaternion off by a scale still decodes
    np.testing.assert_allclose(R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    with pytest.raises(ValueError, match="zero or non-finite norm"):
        quaternion_to_matrix(0.0, 0.0, 0.0, 0.0)
    # a parameter is checked: a non-unit value there is a typo
    with pytest.raises(ValueError, match="not unit length"):
        matrix_from_translation_quaternion([0, 0, 0], [0, 0, 2, 2])
    with pytest.raises(ValueError, match="not unit length"):
        matrix_from_translation_quaternion([0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="need 3 translation and 4 quaternion values"):
        matrix_from_translation_quaternion([0, 0], [0, 0, 0, 1])
