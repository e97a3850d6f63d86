"""The numpy MarkerArray serializer against rclpy's own CDR serializer."""

import numpy as np
import pytest
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message
from visualization_msgs.msg import Marker, MarkerArray

from monoocc_ros.msgs.markers import CubeList, serialize_marker_array, serialize_marker_array_with_padding


def _slow_marker_array(stamp_ns, frame_id, cubes):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    array = MarkerArray()
    clear = Marker(action=Marker.DELETEALL, type=Marker.CUBE_LIST)
    clear.header.stamp.sec, clear.header.stamp.nanosec, clear.header.frame_id = sec, nanosec, frame_id
    array.markers.append(clear)
    for cube in cubes:
        m = Marker(ns=cube.ns, id=cube.marker_id, type=Marker.CUBE_LIST, action=Marker.ADD)
        m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id = sec, nanosec, frame_id
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = cube.scale_m
        m.color.r, m.color.g, m.color.b, m.color.a = cube.rgba
        m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in cube.points]
        array.markers.append(m)
    return array


def _cubes(rng, sizes):
    names = ["car", "road", "sidewalk-with-a-longer-name", "x"]
    return [
        CubeList(names[i % 4], i + 1, rng.normal(size=(n, 3)) * 20, 0.2, (0.25, 0.5, 0.75, 1.0))
        for i, n in enumerate(sizes)
    ]


def test_small_marker_array_is_byte_identical_to_rclpy_except_padding():
    rng = np.random.default_rng(0)
    cubes = _cubes(rng, [3, 0, 1, 7])
    stamp_ns = 1_700_000_123_456_789_012
    fast, padding = serialize_marker_array_with_padding(stamp_ns, "velodyne", cubes)
    reference = serialize_message(_slow_marker_array(stamp_ns, "velodyne", cubes))
    assert len(fast) == len(reference)
    fast_u8, ref_u8 = np.frombuffer(fast, np.uint8), np.frombuffer(reference, np.uint8)
    # Fast CDR leaves alignment padding uninitialised; every other byte must match.
    assert np.array_equal(fast_u8[~padding], ref_u8[~padding])
    assert padding.sum() < 0.2 * len(fast)
    assert fast[:4] == b"\x00\x01\x00\x00"


def test_big_marker_array_deserializes_to_the_same_points():
    rng = np.random.default_rng(1)
    cubes = _cubes(rng, [30_000, 15_000, 5_000])
    data = serialize_marker_array(42, "velodyne", cubes)
    array = deserialize_message(data, MarkerArray)
    assert [m.action for m in array.markers] == [Marker.DELETEALL, Marker.ADD, Marker.ADD, Marker.ADD]
    for marker, cube in zip(array.markers[1:], cubes):
        assert marker.ns == cube.ns and marker.id == cube.marker_id and marker.type == Marker.CUBE_LIST
        assert marker.header.frame_id == "velodyne" and marker.header.stamp.nanosec == 42
        assert marker.scale.x == marker.scale.y == marker.scale.z == 0.2
        got = np.array([[p.x, p.y, p.z] for p in marker.points])
        assert np.array_equal(got, cube.points)
        assert (marker.color.r, marker.color.g, marker.color.b, marker.color.a) == cube.rgba


def test_bad_points_shape_names_the_marker():
    bad = CubeList("car", 1, np.zeros((4, 2)), 0.2, (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"'car'.*\(4, 2\)"):
        serialize_marker_array(0, "velodyne", [bad])
