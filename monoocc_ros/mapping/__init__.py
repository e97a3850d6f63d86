"""Persistent semantic map in a fixed frame (``odom``) and a BEV costmap, ROS-free.

Each frame's 256x256x32 prediction (labels + confidence, grid frame) is fused into a rolling
window of voxels centred on the vehicle, expressed in the fixed frame through the grid's pose
at the image stamp (``T_odom_grid``).

Per map voxel (flat arrays over the window, ring-buffer addressed in x and y):

* ``logodds`` (float32): occupancy evidence. A voxel predicted occupied adds
  ``hit_logodds * conf``; a voxel predicted empty inside the camera frustum adds
  ``miss_logodds * conf`` (negative); clamped to ``[min_logodds, max_logodds]``. Occupied
  above ``occupied_logodds``; 0 = no evidence (never observed): "unknown".
* ``label`` / ``votes`` (uint8 / float16): the class, by a confidence-weighted majority vote
  (Boyer-Moore): the same class adds ``conf`` to the margin, another class removes it and
  takes over when the margin drops below zero. One class per voxel instead of a histogram
  keeps memory at a few bytes per voxel.
* ``stamp`` (float32, seconds since the first frame): time of the last update. Occupied
  evidence decays exponentially towards 0 with the time constant of the voxel's class
  (``movable_tau_s`` for car, person, bicyclist ..., ``static_tau_s`` otherwise), lazily:
  when the voxel is next updated or read, so a frame only touches the voxels it observes. A
  car that drives away inside the view is cleared by free-space evidence; one that leaves
  the view fades. Free-space evidence does not decay (a later hit overrides it).
* ``sat`` (uint8): the voxel's saturated state, one code per state a repeated identical
  observation cannot change: free at ``min_logodds``, or a non-decaying class at
  ``max_logodds``. A frame skips voxels whose observation equals it, so a static scene
  seen again costs little.

Memory and speed:

* The window is a fixed array of ``size`` voxels (default 512 x 512 x 32 at 0.2 m =
  102.4 x 102.4 x 6.4 m, 12 bytes per voxel = 96 MiB), whatever the driven distance or time:
  memory does not grow as the vehicle drives. When the vehicle moves, the window origin moves
  by whole voxels; in x and y only the slabs that leave the window are cleared (ring
  addressing, no copy); in z (climbing or descending a voxel) the layers are shifted. What
  leaves the window is forgotten.
* A frame is fused column by column: for every map column under the grid's footprint the
  nearest grid column (2D rotation by the pose's yaw) and a per-column height offset are
  computed (about 10^5 columns); three row-wise passes compare the frame's observation codes
  with ``sat`` and only the differing voxels are gathered and updated (a few 10^5 of the 2M).
  Pulling each map voxel from its nearest grid voxel (instead of pushing grid voxels to
  their nearest map voxel) leaves no holes and no double writes under rotation. Roll and
  pitch enter only through the per-column height offset (exact for a level pose; tilts above
  ``max_tilt_deg`` are refused). ``bench/bench_map.py`` measures the time per frame.
* The comparison and update run in one C pass over the footprint's columns
  (:mod:`monoocc_ros.mapping.kernel`, compiled on first use, bit-identical to the numpy path that is
  kept as the fallback: ``use_kernel = False`` or no compiler); about 3-4x less CPU per frame.
  Its scratch buffers for the decaying voxels are sized for a whole grid but only the pages
  written (a few thousand entries per frame) are ever resident.

Example:
    >>> from monoocc_ros.mapping import MapConfig, SemanticMap
    >>> m = SemanticMap(MapConfig())
    >>> m.integrate(labels, confidence, T_odom_grid, stamp_s, camera)   # doctest: +SKIP
    >>> costmap = m.costmap()                                           # doctest: +SKIP

Modules: :mod:`.config` (:class:`MapConfig`), :mod:`.frustum` (the camera's field of view as a
voxel mask, cached per calibration), :mod:`.semantic_map` (the window and the fusion),
:mod:`.readout` (snapshot, sampling in a grid, BEV costmap), :mod:`.kernel` (the C pass).
"""

from monoocc_ros.mapping.config import MOVABLE_CLASSES, MapConfig
from monoocc_ros.mapping.frustum import frustum_mask
from monoocc_ros.mapping.readout import COSTMAP_FREE, COSTMAP_OBSTACLE, COSTMAP_UNKNOWN, MapSnapshot
from monoocc_ros.mapping.semantic_map import SemanticMap

__all__ = [
    "COSTMAP_FREE",
    "COSTMAP_OBSTACLE",
    "COSTMAP_UNKNOWN",
    "MOVABLE_CLASSES",
    "MapConfig",
    "MapSnapshot",
    "SemanticMap",
    "frustum_mask",
]
