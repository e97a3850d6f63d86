"""Fixtures of the ROS tests: a private DDS domain per module and a tiny real checkpoint.

Run with the project's ROS environment: ``source scripts/env.sh && python -m pytest test/ros``.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

_module_counter = itertools.count()


def domain_id_for_this_module() -> int:
    # Fast DDS accepts domain ids 0..232; spread by pid so parallel pytest runs don't meet.
    return 100 + (os.getpid() * 7 + next(_module_counter)) % 130


@pytest.fixture(scope="module")
def ros_domain() -> int:
    """Initialise rclpy on a domain id of this test module only; shut down afterwards."""
    import rclpy

    domain = domain_id_for_this_module()
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    rclpy.init(domain_id=domain)
    yield domain
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint of a randomly initialised ``tiny`` MonoOcc student (real file format)."""
    import torch

    from monoocc_ros.models.checkpoint import make_payload, save_checkpoint
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    torch.manual_seed(0)
    model = MonoOccStudent(get_model_config("tiny"))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", make_payload(model, "tiny"))


def _spin_until(executor, condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return bool(condition())


@pytest.fixture(scope="session")
def spin_until():
    """``spin_until(executor, condition, timeout_s=20)``: spin until true or timeout; returns condition()."""
    return _spin_until
