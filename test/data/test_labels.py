"""The project's label configuration against the official semantic-kitti.yaml."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from monoocc_ros.labels import EMPTY, IGNORE, SEMANTIC_KITTI


@pytest.fixture(scope="module")
def official(real_kitti) -> dict:
    with open(real_kitti / "config" / "semantic-kitti.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_learning_maps_match_official(official):
    assert SEMANTIC_KITTI.learning_map == {
        int(k): int(v) for k, v in official["learning_map"].items()
    }
    assert SEMANTIC_KITTI.learning_map_inv == {
        int(k): int(v) for k, v in official["learning_map_inv"].items()
    }
    assert SEMANTIC_KITTI.num_classes == len(official["learning_map_inv"]) == 20


def test_names_match_official(official):
    # Train id 0 is "unlabeled" officially and "empty" in SSC; the rest are the raw label names.
    assert SEMANTIC_KITTI.names[0] == "empty"
    for train in range(1, 20):
        raw = official["learning_map_inv"][train]
        assert SEMANTIC_KITTI.names[train] == official["labels"][raw], train


def test_colours_are_official_bgr_reversed(official):
    for train in range(20):
        raw = official["learning_map_inv"][train]
        b, g, r = official["color_map"][raw]
        assert SEMANTIC_KITTI.colors_rgb[train].tolist() == [r, g, b], SEMANTIC_KITTI.names[train]


def test_ssc_remap_rule_matches_official_evaluation(official):
    # Build the official table as evaluate_completion.py does: max key + 100, 0 -> 255, [0] = 0.
    lm = official["learning_map"]
    lut = np.zeros(max(lm) + 100, dtype=np.int32)
    lut[list(lm)] = list(lm.values())
    lut[lut == 0] = 255
    lut[0] = 0
    assert SEMANTIC_KITTI.ssc_remap_lut.tolist() == lut.tolist()
    raw = np.arange(len(lut))
    assert SEMANTIC_KITTI.remap_voxel_labels(raw).tolist() == lut.tolist()
    # Spot checks of the rule's cases.
    remap = SEMANTIC_KITTI.remap_voxel_labels
    assert remap(np.array([0]))[0] == EMPTY
    assert remap(np.array([1, 52, 99, 5])).tolist() == [IGNORE] * 4
    assert remap(np.array([252, 60, 259])).tolist() == [1, 9, 5]
    with pytest.raises(ValueError, match="not a SemanticKITTI id"):
        remap(np.array([len(lut)]))


def test_label_sets_load_by_name_or_path(tmp_path):
    from monoocc_ros.config_io import ConfigError
    from monoocc_ros.labels import load_label_set

    assert load_label_set("semantic_kitti") is SEMANTIC_KITTI
    path = tmp_path / "three.yaml"
    path.write_text("classes: [empty, thing, stuff]\ncolors_rgb: [[0, 0, 0], [1, 2, 3], [4, 5, 6]]\n"
                    "voxel_frequencies: [100, 10, 10]\n")
    three = load_label_set(str(path))
    # learning maps default to the identity, the table order to 1..N-1
    assert three.names == ("empty", "thing", "stuff") and three.paper_table_order == (1, 2)
    assert three.remap_voxel_labels(np.array([0, 1, 2])).tolist() == [0, 1, 2]
    assert three.colorize(np.array([2]))[0].tolist() == [4, 5, 6]
    path.write_text("classes: [empty, thing]\ncolors_rgb: [[0, 0, 0]]\nvoxel_frequencies: [1, 1]\n")
    with pytest.raises(ConfigError, match="one entry per class"):
        load_label_set(str(path))  # the file changed: read again, not served from the cache
    (tmp_path / "bad.yaml").write_text("classes: [empty, thing]\n")
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['colors_rgb', 'voxel_frequencies'\]"):
        load_label_set(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="neither a known label set"):
        load_label_set("occ3d")
