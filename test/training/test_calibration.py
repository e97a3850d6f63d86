"""Confidence calibration: temperature fitted on validation frames lowers the ECE on held-out frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monoocc_ros.calibration import ReliabilityHistogram, expected_calibration_error, fit_temperature

FAST = ["num_workers=0", "log_images=false", "device=cpu"]
SCALE = 0.25


def test_ece_by_hand_and_histogram_merge():
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    # bin of 0.95: accuracy 0.5, confidence 0.95; bin of 0.55: accuracy 1, confidence 0.55
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    a, b = ReliabilityHistogram(), ReliabilityHistogram()
    a.update(conf[:2], correct[:2])
    b.update((conf[2:] * 255).round().astype(np.uint8), correct[2:])  # published uint8 confidence
    a.merge(b)
    assert a.total == 4 and a.ece() == pytest.approx(0.45, abs=0.01)
    assert np.isnan(ReliabilityHistogram().ece())


def test_fit_temperature_recovers_overconfidence():
    torch.manual_seed(0)
    true_logits = torch.randn(20000, 5) * 1.5
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    logits = 3.0 * true_logits  # a model three times too sure of itself
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)

    def ece(temp):
        prob, pred = (logits / temp).softmax(1).max(1)
        return expected_calibration_error(prob.numpy(), (pred == labels).numpy())

    assert ece(t) < 0.02 < ece(1.0)


@pytest.mark.slow
def test_temperature_from_validation_lowers_held_out_ece(synthetic_bag, split_bags, tmp_path):
    from monoocc_ros.evaluation.offline import OfflineConfig, run_offline
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from training.calibrate import collect_logits
    from training.config import BUILTIN_CONFIG_DIR, load_train_config
    from training.data import open_dataset
    from training.train import run_training

    val, held_out = split_bags
    out = tmp_path / "student"
    items = FAST + [
        f"data.image_scale={SCALE}", f"data.train_bags={synthetic_bag}", "data.max_train_frames=2",
        f"data.val_bags={val}", "validate=true", "epochs=1", "optim.lr=2e-3", "optim.warmup_iters=0",
        "distill.mode=off", "distill.teacher_checkpoint=", f"out_dir={out}",
    ]
    summary = run_training(load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml", items))
    record = summary.calibration["last.pt"]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["calibration"]["temperature"] == record["temperature"]
    model, _ = build_model_from_checkpoint(ckpt)
    assert model.head.temperature == record["temperature"] != 1.0

    # held-out frame (never trained on, not used for the fit), at the training image scale
    logits, labels = collect_logits(model, open_dataset((str(held_out),), "held_out", (), 0, SCALE), progress=False)
    eces = {}
    for name, t in (("before", 1.0), ("after", model.head.temperature)):
        prob, pred = (logits / t).softmax(1).max(1)
        eces[name] = expected_calibration_error(prob.numpy(), (pred == labels).numpy())
    print(f"[calibration] T={record['temperature']:.3f}; validation {record}; held-out ECE {eces}")
    assert eces["after"] < eces["before"], eces

    # the evaluation report measures the published confidence before and after the temperature
    report = run_offline(held_out, out / "last.pt", tmp_path / "eval", OfflineConfig(calibration=True, progress=False))
    c = report["calibration"]
    print(f"[calibration] offline report at full image size: {({k: c[k] for k in ('temperature', 'ece_before', 'ece_after', 'voxels')})}")
    assert c["temperature"] == record["temperature"] and c["voxels"] > 0
    assert c["ece_before"] != c["ece_after"]
    assert report["checkpoint"]["calibration"]["temperature"] == record["temperature"]
    assert "Confidence calibration: temperature" in (tmp_path / "eval" / "table.md").read_text()


@pytest.mark.parametrize("channels", [16, 64])  # 16: the fused CPU kernel (when built), 64: the tensor path
def test_head_temperature_changes_confidence_not_labels(channels):
    from monoocc_ros.models.heads import OccupancyHead

    torch.manual_seed(0)
    head = OccupancyHead(channels, 20)
    x = torch.randn(1, channels, 8, 8, 4)
    labels, conf = head.predict(x, with_confidence=True)
    head.temperature = 0.5
    sharp_labels, sharp = head.predict(x, with_confidence=True)
    assert torch.equal(labels, sharp_labels)
    assert (sharp >= conf).all() and sharp.float().mean() > conf.float().mean() + 10
    logits = head(x)  # training path: (1, 20, 16, 16, 8)
    expected = (logits / 0.5).softmax(1).max(1).values[0] * 255
    assert (sharp[0].float() - expected).abs().max() <= 1.0
