"""Per-frame node overhead: building and publishing the outputs of one prediction.

A full 256x256x32 grid with 50,000 occupied voxels is turned into the grid message, the
PointCloud2 and the per-class MarkerArray and published (no subscribers, so no network), once
the node's way (bytes, numpy, CDR fast path) and once the naive rclpy way (numpy assigned to
``uint8[]``, one ``Point`` object per cube, the cloud packed point by point). Prints JSON.

    source scripts/env.sh && python bench/bench_node.py [--voxels 50000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import time

import numpy as np


def _grid(num_voxels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from monoocc_ros.grid import KITTI_GRID

    rng = np.random.default_rng(seed)
    labels = np.zeros(KITTI_GRID.num_voxels, np.uint8)
    index = rng.choice(KITTI_GRID.num_voxels, size=num_voxels, replace=False)
    labels[index] = rng.integers(1, 20, size=num_voxels)
    confidence = rng.integers(0, 256, size=KITTI_GRID.num_voxels, dtype=np.uint8)
    return labels.reshape(KITTI_GRID.size), confidence.reshape(KITTI_GRID.size)


def fast_frame(pubs, labels, confidence, stamp) -> None:
    from monoocc_ros.grid import KITTI_GRID
    from monoocc_ros.labels import SEMANTIC_KITTI
    from monoocc_ros.msgs.cloud import occupied_voxels
    from monoocc_ros.msgs.markers import class_cubes, serialize_marker_array
    from monoocc_ros.ros.conversions import cloud_to_msg, grid_to_msg, stamp_to_ns

    pubs["grid"].publish(grid_to_msg(labels, confidence, KITTI_GRID, SEMANTIC_KITTI, stamp, "velodyne"))
    points = occupied_voxels(labels, confidence, KITTI_GRID, SEMANTIC_KITTI)
    pubs["cloud"].publish(cloud_to_msg(points, stamp, "velodyne"))
    cubes = class_cubes(points, KITTI_GRID, SEMANTIC_KITTI)
    pubs["markers"].publish(serialize_marker_array(stamp_to_ns(stamp), "velodyne", cubes))


def naive_frame(pubs, labels, confidence, stamp) -> None:
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import PointCloud2, PointField
    from visualization_msgs.msg import Marker, MarkerArray

    from monoocc_ros.grid import KITTI_GRID
    from monoocc_ros.labels import SEMANTIC_KITTI
    from monoocc_ros.msg import SemanticOccupancyGrid

    grid = SemanticOccupancyGrid()
    grid.header.stamp, grid.header.frame_id = stamp, "velodyne"
    grid.resolution = KITTI_GRID.voxel_size_m
    grid.size_x, grid.size_y, grid.size_z = KITTI_GRID.size
    grid.labels = labels.ravel()
    grid.confidence = confidence.ravel()
    grid.class_names = list(SEMANTIC_KITTI.names)
    pubs["grid"].publish(grid)

    ijk = np.argwhere((labels != 0) & (labels != 255))
    centres = KITTI_GRID.index_to_point(ijk)
    ids = labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    conf = confidence[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    cloud = PointCloud2()
    cloud.header.stamp, cloud.header.frame_id = stamp, "velodyne"
    cloud.height, cloud.width, cloud.point_step = 1, len(ids), 24
    cloud.row_step = 24 * len(ids)
    cloud.fields = [
        PointField(name=n, offset=o, datatype=d, count=1)
        for n, o, d in [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 2), ("confidence", 20, 7)]
    ]
    buf = bytearray()
    for (x, y, z), c, p in zip(centres, ids, conf):
        r, g, b = SEMANTIC_KITTI.colors_rgb[c]
        buf += struct.pack("<fffIBxxxf", x, y, z, (int(r) << 16) | (int(g) << 8) | int(b), int(c), p / 255.0)
    cloud.data = bytes(buf)
    pubs["cloud"].publish(cloud)

    array = MarkerArray()
    array.markers.append(Marker(action=Marker.DELETEALL))
    for class_id in np.unique(ids):
        m = Marker(ns=SEMANTIC_KITTI.names[class_id], id=int(class_id), type=Marker.CUBE_LIST)
        m.header.stamp, m.header.frame_id = stamp, "velodyne"
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = KITTI_GRID.voxel_size_m
        m.color.r, m.color.g, m.color.b = (float(v) / 255.0 for v in SEMANTIC_KITTI.colors_rgb[class_id])
        m.color.a = 1.0
        m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in centres[ids == class_id]]
        array.markers.append(m)
    pubs["markers"].publish(array)


def _time_ms(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--naive-repeats", type=int, default=2)
    args = parser.parse_args()

    import rclpy
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from monoocc_ros.msg import SemanticOccupancyGrid

    rclpy.init()
    node = rclpy.create_node("bench_node")
    pubs = {
        "grid": node.create_publisher(SemanticOccupancyGrid, "bench/occupancy", 1),
        "cloud": node.create_publisher(PointCloud2, "bench/occupied_voxels", 1),
        "markers": node.create_publisher(MarkerArray, "bench/markers", 1),
    }
    labels, confidence = _grid(args.voxels)
    stamp = Time(sec=1, nanosec=0)
    fast_frame(pubs, labels, confidence, stamp)  # warm-up: imports, caches
    fast = _time_ms(lambda: fast_frame(pubs, labels, confidence, stamp), args.repeats)
    naive = _time_ms(lambda: naive_frame(pubs, labels, confidence, stamp), args.naive_repeats)
    node.destroy_node()
    rclpy.try_shutdown()
    fast_ms, naive_ms = float(np.median(fast)), float(np.median(naive))
    print(
        json.dumps(
            {
                "benchmark": "node_output_overhead",
                "occupied_voxels": args.voxels,
                "grid": list(labels.shape),
                "fast_ms_median": round(fast_ms, 2),
                "fast_ms_min": round(min(fast), 2),
                "fast_ms_max": round(max(fast), 2),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "naive_ms_median": round(naive_ms, 2),
                "speedup": round(naive_ms / fast_ms, 1),
                "target": {"fast_ms_below": 10.0, "speedup_at_least": 30.0},
                "meets_target": fast_ms < 10.0 and naive_ms / fast_ms >= 30.0,
                "repeats": {"fast": args.repeats, "naive": args.naive_repeats},
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
