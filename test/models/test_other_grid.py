"""Another label set and another grid are a config change (issue 17).

A 5-class label set (written here as a YAML file over SemanticKITTI's raw ids) and a 128x128x16
grid of 0.4 m are set in a training YAML only (``model_overrides``); the real trainer trains the
tiny student on the generated bag, validates with 5-class metrics, and the checkpoint predicts
that grid with those classes. Nothing else is changed, so ignoring the config would fail the
shape, class-count and label-range checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from monoocc_ros.grid import KITTI_GRID
from monoocc_ros.labels import IGNORE, SEMANTIC_KITTI, load_label_set

# SemanticKITTI class -> one of five coarse classes
GROUPS = {
    "vehicle": ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist"),
    "ground": ("road", "parking", "sidewalk", "other-ground", "terrain"),
    "structure": ("building", "fence", "pole", "traffic-sign"),
    "nature": ("vegetation", "trunk"),
}
NAMES = ["empty", *GROUPS]
GRID = {"size": [128, 128, 16], "voxel_size_m": 0.4, "origin_m": [0.0, -25.6, -2.0]}


def write_five_class_set(path: Path) -> Path:
    """A label set YAML whose learning_map sends SemanticKITTI raw ids to the five classes."""
    group_of = {name: 1 + i for i, members in enumerate(GROUPS.values()) for name in members}
    learning_map = {}
    for raw, train in SEMANTIC_KITTI.learning_map.items():
        name = SEMANTIC_KITTI.names[train]
        learning_map[raw] = group_of.get(name, 0)
    inverse = {0: 0}
    for raw, group in sorted(learning_map.items()):
        inverse.setdefault(group, raw)
    path.write_text(
        yaml.safe_dump(
            {
                "classes": NAMES,
                "colors_rgb": [[0, 0, 0], [100, 150, 245], [255, 0, 255], [255, 200, 0], [0, 175, 0]],
                "learning_map": learning_map,
                "learning_map_inv": inverse,
                "voxel_frequencies": [5.0e9, 2.0e7, 4.0e8, 3.0e8, 3.0e8],
            }
        )
    )
    return path


@pytest.fixture
def five_class_run(synthetic_bag, tmp_path):
    from training.config import load_train_config
    from training.train import run_training

    labels = write_five_class_set(tmp_path / "five.yaml")
    out = tmp_path / "run"
    config = tmp_path / "student_five.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "role": "student",
                "model": "tiny",
                "model_overrides": [f"labels={labels}", "head.num_classes=5"]
                + [f"grid.{k}={json.dumps(v)}" for k, v in GRID.items()],
                "data": {
                    "train_bags": [str(synthetic_bag)],
                    "val_bags": [str(synthetic_bag)],
                    "temporal_offsets": [],
                    "image_scale": 0.125,
                    "max_train_frames": 1,
                    "max_val_frames": 1,
                },
                "distill": {"mode": "off", "teacher_checkpoint": ""},
                "optim": {"lr": 5e-3, "warmup_iters": 1},
                "epochs": 5,
                "val_every": 5,
                "out_dir": str(out),
                "seed": 0,
                "num_workers": 0,
                "log_every": 1,
                "log_images": False,
                "calibrate": False,
                "device": "cpu",
            }
        )
    )
    summary = run_training(load_train_config(config))
    return summary, out, labels


def test_label_set_yaml_round_trip(tmp_path):
    five = load_label_set(str(write_five_class_set(tmp_path / "five.yaml")))
    assert five.names == tuple(NAMES) and five.num_classes == 5
    assert five.remap_voxel_labels(np.array([10, 40, 50, 70, 0])).tolist() == [1, 2, 3, 4, 0]
    assert five.paper_table_order == (1, 2, 3, 4)


def test_retarget_translates_then_downsamples(tmp_path):
    from monoocc_ros.data.retarget import Retarget

    five = load_label_set(str(write_five_class_set(tmp_path / "five.yaml")))
    retarget = Retarget(KITTI_GRID, SEMANTIC_KITTI, KITTI_GRID.downscaled(2), five)
    labels = np.zeros(KITTI_GRID.size, np.uint8)
    car, truck, road = (SEMANTIC_KITTI.names.index(n) for n in ("car", "truck", "road"))
    # one coarse cell: 3 car + 2 truck + 3 road children -> vehicle (5) beats ground (3) only after translation
    cell = labels[:2, :2, :2].reshape(-1)
    cell[:] = [car, car, car, truck, truck, road, road, road]
    labels[:2, :2, :2] = cell.reshape(2, 2, 2)
    labels[2:4, :2, :2] = IGNORE
    out = retarget.labels(labels)
    assert out.shape == (128, 128, 16)
    assert out[0, 0, 0] == NAMES.index("vehicle") and out[1, 0, 0] == IGNORE and out[2, 0, 0] == 0
    with pytest.raises(ValueError, match="integer coarser"):
        Retarget(KITTI_GRID, SEMANTIC_KITTI, type(KITTI_GRID)((128, 128, 16), 0.4, (1.0, -25.6, -2.0)), five)


def test_other_grid_and_label_set_train_through_the_trainer(five_class_run, synthetic_bag):
    from monoocc_ros.data.bag_dataset import BagDataset
    from monoocc_ros.data.retarget import Retarget
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

    summary, out, labels_path = five_class_run
    losses = [json.loads(line)["loss"] for line in (out / "losses.jsonl").read_text().splitlines()]
    assert len(losses) == 5
    assert losses[-1] < 0.9 * losses[0] and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    # validation scored 5 classes by their names
    assert {"iou_vehicle", "iou_ground", "iou_structure", "iou_nature"} <= set(summary.val[-1]), summary.val[-1]
    assert "iou_road" not in summary.val[-1]

    model, cfg = build_model_from_checkpoint(load_checkpoint(out / "last.pt"))
    assert cfg.grid.size == (128, 128, 16) and cfg.grid.voxel_size_m == pytest.approx(0.4)
    assert cfg.labels == str(labels_path) and cfg.label_set().num_classes == 5
    assert model.head.fc.out_features == 5
    sample = BagDataset([synthetic_bag], frames=slice(0, 1))[0]
    image = torch.nn.functional.interpolate(sample["image"][None], scale_factor=0.125, mode="bilinear")
    K = sample["K"].clone()
    K[:2] *= 0.125
    pred, _ = model.eval().predict(image, K[None], sample["T_cam_grid"][None])
    assert tuple(pred.shape) == (1, 128, 128, 16) and int(pred.max()) < 5
    # the trained model predicts occupied voxels where the retargeted ground truth has them
    gt = Retarget.for_model(cfg)(sample)["labels"][None]
    assert tuple(gt.shape) == (1, 128, 128, 16) and int(gt[gt != IGNORE].max()) < 5
    occupied_gt = (gt != 0) & (gt != IGNORE)
    assert bool(occupied_gt.any())
    hits = ((pred.long() != 0) & occupied_gt).sum() / occupied_gt.sum()
    assert float(hits) > 0.1, float(hits)
