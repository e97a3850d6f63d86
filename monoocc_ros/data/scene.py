"""Synthetic street scenes written in the exact SemanticKITTI layout (``monoocc generate-scene``).

A seeded procedural street (road with lane markings, parking strips, sidewalks, terrain,
buildings, fences, trees, bushes, poles, traffic signs, parked and oncoming vehicles, people,
bicyclists; see :mod:`monoocc_ros.data.scene_layout`) is driven along by a KITTI-like sensor
rig: an HDL-64-like LiDAR 1.73 m above the road and camera 2 with the real calibration of
KITTI sequence 08. Per frame the generator writes the rendered camera image, the ray-cast
scan with point labels and, every ``voxel_every`` frames, the four voxel files; per sequence
``calib.txt``, ``poses.txt`` and ``times.txt``. All files go through the writers of
:mod:`monoocc_ros.data.kitti`, so they read back with its readers.

Calibration for other image sizes: the rows of every ``P`` are scaled, the first by W/1226 and
the second by H/370 (fx, cx and the first entry of the last column by W/1226; fy, cy and the
second entry by H/370). This is exactly an image resize under the pixel-centre-at-+0.5
convention, so projections land on the same scene points; ``Tr`` is unchanged.

Same config and seed give byte-identical files.

Example:
    >>> from monoocc_ros.data.scene import SceneConfig, generate_sequence
    >>> cfg = SceneConfig(num_frames=10, image_size=(96, 320))
    >>> seq = generate_sequence(Path("/tmp/synth"), cfg)    # doctest: +SKIP
    >>> sorted(p.name for p in seq.iterdir())               # doctest: +SKIP
    ['calib.txt', 'image_2', 'labels', 'poses.txt', 'times.txt', 'velodyne', 'voxels']
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monoocc_ros.camera import invert_rigid, kitti_camera_from_calib
from monoocc_ros.data import kitti
from monoocc_ros.data.scene_layout import EGO_LATERAL_M, Street, build_street
from monoocc_ros.grid import KITTI_GRID

__all__ = [
    "KITTI08_CALIB",
    "KITTI_IMAGE_HW",
    "SceneConfig",
    "ScenePlan",
    "generate_sequence",
    "plan_scene",
    "run_command",
    "scaled_calib",
]

KITTI_IMAGE_HW = (370, 1226)
"""Image size (H, W) of KITTI sequences 04-12, the size of the sequence-08 calibration."""

KITTI08_CALIB = {
    "P0": np.array([[7.070912e02, 0.0, 6.018873e02, 0.0],
                    [0.0, 7.070912e02, 1.831104e02, 0.0],
                    [0.0, 0.0, 1.0, 0.0]]),
    "P1": np.array([[7.070912e02, 0.0, 6.018873e02, -3.798145e02],
                    [0.0, 7.070912e02, 1.831104e02, 0.0],
                    [0.0, 0.0, 1.0, 0.0]]),
    "P2": np.array([[7.070912e02, 0.0, 6.018873e02, 4.688783e01],
                    [0.0, 7.070912e02, 1.831104e02, 1.178601e-01],
                    [0.0, 0.0, 1.0, 6.203223e-03]]),
    "P3": np.array([[7.070912e02, 0.0, 6.018873e02, -3.334597e02],
                    [0.0, 7.070912e02, 1.831104e02, 1.930130e00],
                    [0.0, 0.0, 1.0, 3.318498e-03]]),
    "Tr": np.array([
        [-1.857739385241e-03, -9.999659513510e-01, -8.039975204516e-03, -4.784029760483e-03],
        [-6.481465826011e-03, 8.051860151134e-03, -9.999466081774e-01, -7.337429464231e-02],
        [9.999773098287e-01, -1.805528627661e-03, -6.496203536139e-03, -3.339968064433e-01],
        [0.0, 0.0, 0.0, 1.0]]),
}
"""KITTI odometry sequence 08 calibration (calib.txt of the SemanticKITTI validation sequence)."""

SENSOR_HEIGHT_M = 1.73
FRAME_PERIOD_S = 0.1
BEHIND_START_M = 90.0  # modelled street behind the first pose (the LiDAR looks backwards too)
AHEAD_OF_END_M = 150.0  # ahead of the last pose (camera view distance, later visibility poses)
STRAIGHT_PROBABILITY = 0.3
MAX_VIEW_POSES = 8
_SEQUENCE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class SceneConfig:
    """What to generate.

    Attributes:
        num_frames: frames of the sequence (10 Hz).
        seed: random seed of the street, the path's curvature and the sensor noise.
        image_size: (H, W) of the camera images; the calibration is scaled to it.
        voxel_every: voxel files for frames 0, k, 2k, ... as in SemanticKITTI (k = 5).
        speed_mps: driving speed along the street.
        max_curvature_per_m: bound of the path's curvature (drawn per seed; some streets are
            straight).
        lidar_azimuth_steps: columns of the 64-beam scan (a real HDL-64 has about 2000).
        lidar_max_range_m: LiDAR returns beyond this are dropped.
        visibility_stride: frames between the sensor poses whose views decide ``.invalid``.
        visibility_resolution_deg: angular step of the range images that decide visibility.
    """

    num_frames: int = 20
    seed: int = 0
    image_size: tuple[int, int] = KITTI_IMAGE_HW
    voxel_every: int = 5
    speed_mps: float = 8.0
    max_curvature_per_m: float = 1.0 / 250.0
    lidar_azimuth_steps: int = 1024
    lidar_max_range_m: float = 80.0
    visibility_stride: int = 12
    visibility_resolution_deg: float = 0.3

    def __post_init__(self):
        def is_int(value, minimum: int) -> bool:
            return (not isinstance(value, bool) and isinstance(value, (int, np.integer))
                    and value >= minimum)

        for name in ("num_frames", "voxel_every", "lidar_azimuth_steps", "visibility_stride"):
            if not is_int(getattr(self, name), 1):
                raise ValueError(
                    f"SceneConfig.{name} must be a positive integer, got {getattr(self, name)!r}"
                )
        if not is_int(self.seed, 0):
            raise ValueError(f"SceneConfig.seed must be a non-negative integer, got {self.seed!r}")
        size = tuple(self.image_size)
        if len(size) != 2 or not all(is_int(v, 8) for v in size):
            raise ValueError(
                "SceneConfig.image_size must be (H, W) integers of at least 8, "
                f"got {self.image_size!r}"
            )
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        for name in ("speed_mps", "lidar_max_range_m", "visibility_resolution_deg"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"SceneConfig.{name} must be a positive number, got {value!r}")
        if not np.isfinite(self.max_curvature_per_m) or not 0 <= self.max_curvature_per_m <= 0.02:
            raise ValueError(
                f"SceneConfig.max_curvature_per_m must be in [0, 0.02] (radius >= 50 m), "
                f"got {self.max_curvature_per_m!r}"
            )


def scaled_calib(image_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """KITTI-08 calibration for images of size ``image_hw`` = (H, W).

    Returns:
        ``P0``..``P3``: (3, 4) projection matrices with row 0 scaled by W/1226 and row 1 by
        H/370; ``Tr``: (4, 4) velodyne -> rectified camera 0 (unchanged).
    """
    h, w = image_hw
    scale = np.diag([w / KITTI_IMAGE_HW[1], h / KITTI_IMAGE_HW[0], 1.0])
    calib = {k: scale @ v for k, v in KITTI08_CALIB.items() if k.startswith("P")}
    calib["Tr"] = KITTI08_CALIB["Tr"].copy()
    return calib


@dataclass(frozen=True)
class ScenePlan:
    """Everything a config determines before rendering.

    Attributes:
        config: the config.
        street: the street layout (world frame, road at z = 0).
        calib: ``P0``..``P3`` (3, 4) and ``Tr`` (4, 4) as written to calib.txt.
        K: (3, 3) intrinsics of camera 2.
        T_cam_velo: (4, 4) velodyne -> camera-2 optical frame.
    """

    config: SceneConfig
    street: Street
    calib: dict[str, np.ndarray]
    K: np.ndarray
    T_cam_velo: np.ndarray

    def velodyne_pose(self, frame: int) -> np.ndarray:
        """(4, 4) velodyne -> world at a frame; frames past the sequence continue the drive."""
        s = self.config.speed_mps * FRAME_PERIOD_S * frame
        T = np.eye(4)
        yaw = float(self.street.path.heading(s))
        T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        T[:2, 3] = self.street.path.point(s, EGO_LATERAL_M)
        T[2, 3] = SENSOR_HEIGHT_M
        return T

    def camera_poses(self) -> np.ndarray:
        """(N, 4, 4) KITTI poses.txt entries: camera 0 -> camera 0 of frame 0.

        Chosen so that ``inv(Tr) @ pose @ Tr`` is the velodyne pose relative to frame 0, as
        in SemanticKITTI.
        """
        Tr = self.calib["Tr"]
        T_velo0_world = invert_rigid(self.velodyne_pose(0))
        frames = range(self.config.num_frames)
        velo = np.stack([T_velo0_world @ self.velodyne_pose(i) for i in frames])
        return Tr @ velo @ np.linalg.inv(Tr)

    def view_origins(self, frame: int) -> np.ndarray:
        """(M, 3) sensor positions, in this frame's grid, of the frames whose views decide
        visibility: this one, then every ``visibility_stride`` frames while inside the grid."""
        T_grid_world = invert_rigid(self.velodyne_pose(frame))
        lo = np.asarray(KITTI_GRID.origin_m)
        hi = lo + np.asarray(KITTI_GRID.extent_m)
        origins = []
        for m in range(MAX_VIEW_POSES):
            later = frame + m * self.config.visibility_stride
            o = (T_grid_world @ self.velodyne_pose(later))[:3, 3]
            if not np.all((o[:2] >= lo[:2]) & (o[:2] < hi[:2])):
                break
            origins.append(o)
        return np.array(origins).reshape(-1, 3)


def plan_scene(cfg: SceneConfig) -> ScenePlan:
    """Lay out the street and the sensor rig of a config (deterministic, no rendering)."""
    rng = np.random.default_rng([cfg.seed, 0xC0A5E])
    drive_m = cfg.speed_mps * FRAME_PERIOD_S * (cfg.num_frames - 1)
    s_end = drive_m + AHEAD_OF_END_M
    # a quarter turn at most over the modelled street keeps the constant-curvature path simple
    bound = min(cfg.max_curvature_per_m, 0.5 * np.pi / (s_end + BEHIND_START_M))
    curvature = 0.0 if rng.random() < STRAIGHT_PROBABILITY else float(rng.uniform(-bound, bound))
    street = build_street(cfg.seed, (-BEHIND_START_M, s_end), curvature)
    calib = scaled_calib(cfg.image_size)
    K, T_cam_velo = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    return ScenePlan(cfg, street, calib, K, T_cam_velo)


def _check_sequence_name(sequence: str) -> None:
    if not isinstance(sequence, str) or not _SEQUENCE_NAME.match(sequence):
        raise ValueError(
            f"sequence name {sequence!r} must be letters, digits, '_' or '-' (e.g. '00')"
        )


def generate_sequence(
    root: Path,
    cfg: SceneConfig,
    sequence: str = "00",
    progress: bool = True,
    *,
    overwrite: bool = False,
) -> Path:
    """Generate one synthetic sequence in the SemanticKITTI layout.

    The sequence is built in a hidden sibling folder and moved into place when complete, so
    an interrupted run never leaves a half-written sequence under its real name, and a
    replaced sequence is only removed once its successor is complete.

    Args:
        root: dataset root; the sequence goes to ``root/sequences/<sequence>``.
        cfg: what to generate.
        sequence: sequence folder name.
        progress: show a tqdm bar over frames.
        overwrite: replace an existing non-empty sequence folder.

    Returns:
        The sequence folder.

    Raises:
        FileExistsError: the sequence folder exists, is not empty and ``overwrite`` is False.
        ValueError: bad sequence name.
    """
    from tqdm import tqdm

    from monoocc_ros.data.scene_raycast import (
        SceneMesh,
        camera_directions,
        render_image,
        scan_lidar,
    )
    from monoocc_ros.data.scene_voxels import voxel_truth

    _check_sequence_name(sequence)
    sequences = Path(root) / "sequences"
    target = sequences / sequence
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{target} already exists and is not empty; choose another root or sequence, "
            "or overwrite it (overwrite=True, CLI --force)"
        )
    work = sequences / f".{sequence}.partial-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted run of a process with the same id
    work.mkdir(parents=True)
    try:
        plan = plan_scene(cfg)
        mesh = SceneMesh(plan.street)
        kitti.write_calib(work / "calib.txt", plan.calib)
        kitti.write_poses(work / "poses.txt", plan.camera_poses())
        kitti.write_times(work / "times.txt", FRAME_PERIOD_S * np.arange(cfg.num_frames))
        directions = camera_directions(plan.K, cfg.image_size)
        T_velo_cam = invert_rigid(plan.T_cam_velo)
        for frame in tqdm(range(cfg.num_frames), desc=f"scene {sequence}", unit="frame",
                          disable=not progress):
            name = f"{frame:06d}"
            rng = np.random.default_rng([cfg.seed, frame, 0x5E45])
            T_world_velo = plan.velodyne_pose(frame)
            image = render_image(mesh, plan.K, T_world_velo @ T_velo_cam, cfg.image_size, rng,
                                 directions)
            kitti.write_image(work / "image_2" / f"{name}.png", image)
            scan, labels = scan_lidar(mesh, T_world_velo, rng, cfg.lidar_azimuth_steps,
                                      cfg.lidar_max_range_m)
            kitti.write_scan(work / "velodyne" / f"{name}.bin", scan)
            kitti.write_point_labels(work / "labels" / f"{name}.label", labels)
            if frame % cfg.voxel_every:
                continue
            truth = voxel_truth(mesh, T_world_velo, scan[:, :3], labels & 0xFFFF,
                                plan.view_origins(frame), cfg.visibility_resolution_deg)
            kitti.write_voxel_labels(work / "voxels" / f"{name}.label", truth.labels)
            kitti.write_voxel_bits(work / "voxels" / f"{name}.bin", truth.occupied)
            kitti.write_voxel_bits(work / "voxels" / f"{name}.invalid", truth.invalid)
            kitti.write_voxel_bits(work / "voxels" / f"{name}.occluded", truth.occluded)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if target.exists():
        old = sequences / f".{sequence}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(work, target)
        shutil.rmtree(old)
    else:
        os.replace(work, target)
    return target


def run_command(args: argparse.Namespace) -> int:
    """The handler of ``monoocc generate-scene`` (parser: :mod:`monoocc_ros.cli.data`)."""
    try:
        cfg = SceneConfig(
            num_frames=args.frames,
            seed=args.seed,
            image_size=tuple(args.image_size),
            voxel_every=args.voxel_every,
        )
        path = generate_sequence(args.out, cfg, args.sequence, progress=not args.quiet,
                                 overwrite=args.force)
    except (ValueError, FileExistsError) as e:
        print(f"monoocc generate-scene: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
