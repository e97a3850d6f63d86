"""Exported predictions have the exact layout the official validator and evaluator read."""

from __future__ import annotations

import numpy as np
import pytest

from monoocc_ros.evaluation.submission import (
    prediction_path,
    read_prediction,
    validate_submission,
    write_prediction,
)
from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import SEMANTIC_KITTI


def test_files_are_flat_uint16_raw_ids_in_dataset_order(tmp_path):
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    labels[1, 2, 3] = 1  # car -> raw 10
    labels[255, 255, 31] = 9  # road -> raw 40
    labels[0, 0, 0] = 19  # traffic-sign -> raw 81
    path = write_prediction(tmp_path, "08", 45, labels)
    assert path == tmp_path / "sequences" / "08" / "predictions" / "000045.label"
    raw = path.read_bytes()
    assert len(raw) == 2_097_152 * 2
    flat = np.frombuffer(raw, dtype="<u2")
    assert flat[(1 * 256 + 2) * 32 + 3] == 10
    assert flat[(255 * 256 + 255) * 32 + 31] == 40
    assert flat[0] == 81
    assert np.count_nonzero(flat) == 3
    # Mapping back through the official SSC remap gives the train ids again.
    np.testing.assert_array_equal(SEMANTIC_KITTI.remap_voxel_labels(read_prediction(path)), labels)


def test_every_train_id_maps_to_its_learning_map_inv_raw_id(tmp_path):
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    labels.reshape(-1)[:20] = np.arange(20)
    flat = read_prediction(write_prediction(tmp_path, "11", 0, labels)).reshape(-1)
    expected = [SEMANTIC_KITTI.learning_map_inv[c] for c in range(20)]
    assert flat[:20].tolist() == expected


def test_validator_accepts_a_complete_submission_and_names_each_problem(tmp_path):
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    for f in (0, 5, 10):
        write_prediction(tmp_path, "08", f, labels)
    assert validate_submission(tmp_path, {"08": [0, 5, 10]}) == []

    prediction_path(tmp_path, "08", 10).write_bytes(b"\0" * 100)  # truncated
    (tmp_path / "sequences" / "08" / "predictions" / "000099.label").write_bytes(b"")
    bad_ids = np.full(KITTI_GRID.num_voxels, 7, "<u2")  # raw 7 is not a learning_map_inv id
    prediction_path(tmp_path, "08", 5).write_bytes(bad_ids.tobytes())
    problems = validate_submission(tmp_path, {"08": [0, 5, 10, 15]})
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "missing prediction" in text and "000015.label" in text
    assert "unexpected file" in text and "000099.label" in text
    assert "000010.label: 100 bytes, expected 4194304" in text
    assert "000005.label: raw ids [7]" in text


def test_bad_predictions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_prediction(tmp_path, "08", 0, np.zeros((128, 128, 16), np.uint8))
    bad = np.zeros(KITTI_GRID.size, np.uint8)
    bad[0, 0, 0] = 255
    with pytest.raises(ValueError, match="255"):
        write_prediction(tmp_path, "08", 0, bad)
    with pytest.raises(ValueError, match="two digits"):
        prediction_path(tmp_path, "8", 0)
    assert not any(tmp_path.rglob("*.label"))
