"""bench/bench_backends.py runs end to end on a tiny model (no times asserted): its JSON names the
weights, and eager fp32 agrees with its own reference on every frame."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_backends.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_backends", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_weight_config_is_measured_and_marked(real_kitti, tmp_path, capsys):
    out = tmp_path / "backends.json"
    code = _bench().main(["--config", "tiny", "--runs", "eager:fp32", "eager:bf16", "--sequence",
                          str(real_kitti / "sequences" / "08"), "--frames", "2", "--repeats", "2",
                          "--image-hw", "96x320", "--threads", "1", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["weights"] == "random" and report["checkpoint"] is None and report["config_name"] == "tiny"
    assert report["frames"] == 2 and report["image_hw"] == [96, 320]
    fp32 = report["runs"]["eager:fp32"]
    assert fp32["agreement"] == {"min": 1.0, "mean": 1.0} and fp32["counts"] is True
    assert fp32["occupied_agreement"] == {"min": 1.0, "mean": 1.0}
    assert len(report["reference_occupied"]) == 2 and all(0.0 <= v <= 1.0 for v in report["reference_occupied"])
    bf16 = report["runs"]["eager:bf16"]
    assert 0.0 < bf16["agreement"]["min"] <= 1.0 and bf16["counts"] == (bf16["agreement"]["min"] >= 0.995)
    assert json.loads(capsys.readouterr().out) == report


def test_occupied_agreement_sees_a_run_that_empties_the_grid():
    """Whole-grid agreement stays high when a run drops the few occupied voxels; the occupied share does not."""
    reference = np.zeros((256, 256, 32), np.uint8)
    reference[:8, :8, :4] = 9  # 256 occupied voxels of 2M
    whole, occupied = _bench()._agreement(np.zeros_like(reference), reference)
    assert whole > 0.999 and occupied == 0.0
    candidate = reference.copy()
    candidate[:4, :8, :4] = 11  # half of the occupied voxels relabelled, one extra voxel occupied
    candidate[100, 100, 10] = 9
    whole, occupied = _bench()._agreement(candidate, reference)
    assert occupied == pytest.approx(128 / 257)


def test_checkpoint_and_config_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        _bench().main(["--config", "tiny", "--checkpoint", str(tmp_path / "x.pt"), "--sequence", str(tmp_path)])
