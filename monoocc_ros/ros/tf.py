"""Camera-from-grid transform at an image stamp: tf2_ros where installed, else a static one.

The tf2_ros path never blocks the executor: :meth:`TransformSource.lookup` polls
``can_transform`` with a zero timeout from the inference thread until the frame's deadline.
Tests (and callers with their own buffer) pass any object with the tf2 ``Buffer`` API.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from monoocc_ros.transforms import matrix_from_translation_quaternion

__all__ = ["TransformSource", "StaticTransformSource", "Tf2TransformSource", "tf2_available", "make_transform_source"]


def tf2_available() -> bool:
    return importlib.util.find_spec("tf2_ros") is not None


class TransformSource:
    """Interface: ``lookup(camera_frame, stamp, deadline_s) -> (4, 4) T_cam_grid or None``."""

    description: str

    def lookup(self, camera_frame: str, stamp, deadline_monotonic_s: float) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class StaticTransformSource(TransformSource):
    """A fixed camera-from-grid transform from parameters (used where tf2_ros is absent)."""

    def __init__(self, T_cam_grid: np.ndarray):
        self.T_cam_grid = np.asarray(T_cam_grid, dtype=np.float64)
        self.description = "static camera-from-grid extrinsic from parameters static_T_cam_grid.*"

    def lookup(self, camera_frame: str, stamp, deadline_monotonic_s: float) -> np.ndarray:
        return self.T_cam_grid


class Tf2TransformSource(TransformSource):
    """Looks up ``grid_frame`` -> camera at the image stamp from /tf and /tf_static."""

    def __init__(self, node, grid_frame: str, poll_s: float = 0.005, buffer=None):
        """``buffer``: an object with tf2's ``can_transform``/``lookup_transform``, filled by
        the caller; None makes a ``tf2_ros.Buffer`` with a listener on ``node``."""
        self._listener = None
        if buffer is None:
            import tf2_ros

            # With the node, the buffer follows its clock: a /clock jump back (a looped or
            # restarted bag under use_sim_time) clears it; without, every later lookup of the
            # replay fails with TF_OLD_DATA.
            buffer = tf2_ros.Buffer(node=node)
            # The listener's /tf subscriptions are served by the node's executor thread while the
            # inference thread polls the buffer. Only deactivate makes the executor wait for the
            # inference loop; a lookup in flight then ends at its deadline (tf_timeout_s).
            self._listener = tf2_ros.TransformListener(buffer, node, spin_thread=False)
        self._buffer = buffer
        self._grid_frame = grid_frame
        self._poll_s = poll_s
        self.description = f"tf2_ros lookups of {grid_frame} -> camera frame at the image stamp"

    def lookup(self, camera_frame: str, stamp, deadline_monotonic_s: float) -> np.ndarray | None:
        from rclpy.duration import Duration
        from rclpy.time import Time

        when = Time.from_msg(stamp)
        zero = Duration()
        while True:
            if self._buffer.can_transform(camera_frame, self._grid_frame, when, zero):
                tf = self._buffer.lookup_transform(camera_frame, self._grid_frame, when, zero).transform
                t, q = tf.translation, tf.rotation
                return matrix_from_translation_quaternion([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])
            if time.monotonic() >= deadline_monotonic_s:
                return None
            time.sleep(self._poll_s)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.unregister()


def make_transform_source(
    node, grid_frame: str, static_T_cam_grid: np.ndarray | None, tf_buffer=None
) -> TransformSource:
    """tf2 (``tf_buffer`` when given, else tf2_ros when importable), else the static extrinsic."""
    if tf_buffer is not None or tf2_available():
        return Tf2TransformSource(node, grid_frame, buffer=tf_buffer)
    return StaticTransformSource(static_T_cam_grid)
