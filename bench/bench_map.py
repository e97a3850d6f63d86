"""Semantic map fusion: update time per 256x256x32 frame and memory over 1,000 frames. Prints JSON.

The frames are a straight generated street (:func:`monoocc_ros.data.scene.plan_scene`)
rasterised once into one long grid; frame k is its slice 4k..4k+256 (the vehicle drives 0.8 m,
four voxels, per 0.1 s frame), so labels and poses agree as on a real drive. The street repeats
every ``--street-frames`` frames; the seam only adds work. Each frame gets 2 % of its voxels
replaced by random classes or empty, and confidences in [128, 255], like a network's output.
Time is measured for ``SemanticMap.integrate`` only (wall and CPU time of this process, which
is less disturbed by other load on a shared machine); read-outs (snapshot, costmap) are timed
separately. For the first ``--compare-frames`` frames a second map fuses the same frames with
the numpy path (``use_kernel = False``), interleaved frame by frame so both see the same load:
``numpy_update_cpu_ms`` and ``speedup_cpu_p50`` compare them, and ``states_identical`` says
whether both maps hold bit-identical state afterwards. The numpy path's temporaries stay in the
allocator, so take the memory figures from a run with ``--compare-frames 0``.

    python bench/bench_map.py [--frames 1000] [--street-frames 100] [--compare-frames 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values, q) -> float:
    return round(float(np.percentile(np.asarray(values) * 1e3, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames fused")
    parser.add_argument("--street-frames", type=int, default=100, help="frames before the street repeats")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.02, help="fraction of voxels replaced per frame")
    parser.add_argument("--compare-frames", type=int, default=200,
                        help="frames also fused by the numpy path, for the ratio (0: none)")
    parser.add_argument("--quick", action="store_true", help="200 frames over a 40-frame street")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.street_frames, args.compare_frames = 200, 40, 60

    from monoocc_ros.camera import CameraModel
    from monoocc_ros.data.scene import FRAME_PERIOD_S, SceneConfig, plan_scene
    from monoocc_ros.data.scene_voxels import rasterise_labels
    from monoocc_ros.grid import KITTI_GRID, VoxelGrid
    from monoocc_ros.labels import SEMANTIC_KITTI
    from monoocc_ros.mapping import kernel as map_kernel
    from monoocc_ros.mapping import MapConfig, SemanticMap, frustum_mask

    n = args.street_frames
    cfg = SceneConfig(num_frames=n, seed=args.seed, image_size=(370, 1226), max_curvature_per_m=0.0)
    plan = plan_scene(cfg)
    step_m = cfg.speed_mps * FRAME_PERIOD_S
    step_vox = int(round(step_m / KITTI_GRID.voxel_size_m))
    gx, gy, gz = KITTI_GRID.size
    street = VoxelGrid((gx + step_vox * n, gy, gz), KITTI_GRID.voxel_size_m, KITTI_GRID.origin_m)
    t0 = time.perf_counter()
    world = SEMANTIC_KITTI.remap_voxel_labels(rasterise_labels(plan.street, plan.velodyne_pose(0), street))
    setup_s = time.perf_counter() - t0
    camera = CameraModel(K=plan.K, T_cam_grid=plan.T_cam_velo, image_hw=cfg.image_size)
    frustum_mask(camera)  # cached per calibration; not part of a frame's cost

    rng = np.random.default_rng(args.seed)
    confidences = [rng.integers(128, 256, KITTI_GRID.size, dtype=np.uint8) for _ in range(4)]
    heading = plan.velodyne_pose(0)[:3, 0]
    fusion = SemanticMap(MapConfig())
    map_kernel.load()  # compiled once per machine (cached); not part of a frame's cost
    reference = SemanticMap(MapConfig()) if args.compare_frames > 0 else None
    if reference is not None:
        reference.use_kernel = False
    wall, cpu, updated, ref_cpu = [], [], [], []
    rss_after_100 = None
    for k in range(args.frames):
        i = k % n
        labels = world[step_vox * i: step_vox * i + gx].copy()
        hit = rng.random(KITTI_GRID.size) < args.noise
        labels[hit] = rng.integers(0, SEMANTIC_KITTI.num_classes, int(hit.sum()), dtype=np.uint8)
        T = plan.velodyne_pose(i)
        T[:3, 3] += heading * step_m * n * (k // n)
        w0, c0 = time.perf_counter(), time.process_time()
        updated.append(fusion.integrate(labels, confidences[k % 4], T, k * FRAME_PERIOD_S, camera))
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        if reference is not None and k < args.compare_frames:
            c0 = time.process_time()
            reference.integrate(labels, confidences[k % 4], T, k * FRAME_PERIOD_S, camera)
            ref_cpu.append(time.process_time() - c0)
            if k == args.compare_frames - 1:
                identical = all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(
                    (fusion.logodds, fusion.label, fusion.votes, fusion.stamp, fusion.sat),
                    (reference.logodds, reference.label, reference.votes, reference.stamp, reference.sat)))
                reference = None  # free its 96 MiB before the memory figures
        if k == 99:
            rss_after_100 = _rss_mb()
    rss_end = _rss_mb()
    t0 = time.perf_counter()
    snap = fusion.snapshot()
    snapshot_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    fusion.costmap(snap)
    costmap_ms = (time.perf_counter() - t0) * 1e3
    skip = min(10, len(wall) // 2)  # the first frames fill an empty map
    print(json.dumps({
        "bench": "map",
        "frames": args.frames,
        "input_grid": list(KITTI_GRID.size),
        "map_size": list(fusion.cfg.size),
        "map_voxel_m": fusion.cfg.voxel_size_m,
        "driven_m": round(step_m * args.frames, 1),
        "update_ms": {"p50": _pct(wall[skip:], 50), "p90": _pct(wall[skip:], 90), "max": _pct(wall[skip:], 100)},
        "update_cpu_ms": {"p50": _pct(cpu[skip:], 50), "p90": _pct(cpu[skip:], 90)},
        "first_frames_ms": [round(v * 1e3, 1) for v in wall[:skip]],
        "voxels_updated_p50": int(np.median(updated[skip:])),
        "kernel": map_kernel.kernel_status(),
        **({} if not ref_cpu else {
            "compare_frames": len(ref_cpu),
            "numpy_update_cpu_ms": {"p50": _pct(ref_cpu[skip:], 50), "p90": _pct(ref_cpu[skip:], 90)},
            "update_cpu_ms_same_frames": {"p50": _pct(cpu[skip:len(ref_cpu)], 50)},
            "speedup_cpu_p50": round(_pct(ref_cpu[skip:], 50) / _pct(cpu[skip:len(ref_cpu)], 50), 2),
            "states_identical": identical,
        }),
        "snapshot_ms": round(snapshot_ms, 1),
        "costmap_ms": round(costmap_ms, 1),
        "map_state_mb": round(fusion.nbytes / 2**20, 1),
        "rss_mb_after_100": round(rss_after_100, 1) if rss_after_100 is not None else None,
        "rss_mb_end": round(rss_end, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "setup_s": round(setup_s, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
