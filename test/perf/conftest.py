"""Fixtures for the perf tests: a tiny student, a real KITTI frame at a small size, its ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

IMAGE_HW = (96, 320)


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    torch.manual_seed(0)
    return MonoOccStudent(get_model_config("tiny")).eval()


@pytest.fixture(scope="session")
def small_frame(real_kitti: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequence 08 frame 0 resized to 96x320 with K scaled to match: (image, K, T_cam_grid)."""
    import cv2

    from monoocc_ros.camera import kitti_camera_from_calib
    from monoocc_ros.data.kitti import read_calib

    seq = real_kitti / "sequences" / "08"
    calib = read_calib(seq / "calib.txt")
    K, T = kitti_camera_from_calib(calib["P2"], calib["Tr"])
    image = cv2.cvtColor(cv2.imread(str(seq / "image_2" / "000000.png")), cv2.COLOR_BGR2RGB)
    h, w = IMAGE_HW
    K = np.diag([w / image.shape[1], h / image.shape[0], 1.0]) @ K
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), K, T


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny student exported (labels + confidence) for 96x320 images."""
    from monoocc_ros.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_model, path, image_hw=IMAGE_HW, with_confidence=True, config_name="tiny")


@pytest.fixture(scope="session")
def tiny_reference(tiny_model, small_frame):
    """The eager fp32 prediction (labels + confidence) of the tiny student on ``small_frame``."""
    from monoocc_ros.predictor import Predictor

    return Predictor(tiny_model, confidence=True).predict(*small_frame)
