"""``monoocc experiment ablation``: config loading, and the table / chart / findings from run results."""

from __future__ import annotations

import pytest

from training.config import ConfigError
from training.experiment import AblationConfig, load_ablation_config, markdown, plot, summarize, variants


def test_config_file_quick_and_overrides(tmp_path):
    cfg = load_ablation_config(None, [])
    assert cfg == AblationConfig()  # the shipped YAML spells out the defaults
    quick = load_ablation_config(None, ["seeds=[4,5,6]", f"out_dir={tmp_path}"], quick=True)
    assert quick.seeds == (4, 5, 6) and quick.student_epochs == 2 and quick.train_scenes == (1, 2) and quick.out_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="overlap"):
        load_ablation_config(None, ["held_out_scenes=[1]"])
    with pytest.raises(ConfigError, match="unknown key steps"):
        load_ablation_config(None, ["steps=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_ablation_config(tmp_path / "nope.yaml", [])


def test_grid_downscale_reaches_every_run_as_a_model_grid(tmp_path):
    from monoocc_ros.models.config import get_model_config
    from training.experiment import _train_config

    cfg = AblationConfig(grid_downscale=2)
    for _, spec in variants(cfg):
        train_cfg = _train_config(cfg, spec, 0, ["a"], ["b"], tmp_path)
        grid = get_model_config(train_cfg.model, train_cfg.model_overrides).grid
        assert grid.size == (128, 128, 16) and grid.voxel_size_m == pytest.approx(0.4), spec
        assert grid.origin_m == (0.0, -25.6, -2.0)  # same extent as SemanticKITTI's grid
    assert _train_config(AblationConfig(grid_downscale=1), spec, 0, ["a"], ["b"], tmp_path).model_overrides == ()
    with pytest.raises(ConfigError, match="grid_downscale"):
        load_ablation_config(None, ["grid_downscale=3"])


def test_variants_form_the_ablation_ladder():
    names = [(n, s["model"], s["distill"], s["role"]) for n, s in variants(AblationConfig())]
    assert names[:3] == [("student", "tiny_base", "off", "student"), ("+ICA", "tiny_ica", "off", "student"),
                         ("+ICA +2D loss", "tiny", "off", "student")]
    assert {d for _, _, d, _ in names[3:-1]} == {"mse", "cosine", "softmax_kl", "released_kl"}
    assert names[-1] == ("teacher", "tiny", "off", "teacher")


def _result(variant, seed, miou, iou=0.3, status="ok"):
    scores = {"miou": miou, "completion_iou": iou, "iou_road": 2 * miou, "iou_car": 0.0}
    if status != "ok":
        return {"variant": variant, "seed": seed, "status": status, "error": "features drifted", "scores": {}}
    return {"variant": variant, "seed": seed, "status": "ok", "scores": scores}


def test_table_reports_spread_findings_and_stopped_runs(tmp_path):
    cfg = AblationConfig(seeds=(0, 1, 2), distill_modes=("mse", "released_kl"))
    names = [n for n, _ in variants(cfg)]
    results = []
    for seed in cfg.seeds:
        results += [
            _result("student", seed, 0.10 + 0.01 * seed),
            _result("+ICA", seed, 0.10 + 0.01 * seed),  # no better than the student: the table must say so
            _result("+ICA +2D loss", seed, 0.11 + 0.01 * seed),
            _result("+ICA +2D +distill mse", seed, 0.20 + 0.01 * seed),
            _result("+ICA +2D +distill released_kl", seed, 0.12, status="ok" if seed else "stopped"),
            _result("teacher", seed, 0.30 + 0.01 * seed),
        ]
    summary = summarize(cfg, names, results, seconds=60.0)
    table = markdown(summary)
    assert "| student | 30.00 ± 0.00 | 11.00 ± 1.00 |" in table
    assert "| teacher | 30.00 ± 0.00 | 31.00 ± 1.00 |" in table
    assert "+ICA +2D +distill released_kl (1 run(s) stopped)" in table
    assert "released_kl seed 0 stopped: features drifted" in table
    findings = "\n".join(summary["findings"])
    assert "teacher > student: yes, beyond the seed spread" in findings
    assert "+ICA > student alone: no" in findings
    assert "road" in table and "| car" not in table  # a class no variant gets right is left out
    png = plot(summary, tmp_path / "ablation.png")
    assert png.stat().st_size > 10_000


def test_cli_has_the_ablation_command(capsys):
    from monoocc_ros.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["experiment", "ablation", "--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out
