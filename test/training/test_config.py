"""Training config: YAML loading, unknown keys, typed overrides, shipped configs."""

from dataclasses import asdict
from pathlib import Path

import pytest

from training.config import BUILTIN_CONFIG_DIR, ConfigError, TrainConfig, load_train_config

SHIPPED = ["teacher_tiny", "student_tiny", "teacher_monoocc_s", "student_monoocc_s"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    cfg = load_train_config(BUILTIN_CONFIG_DIR / f"{name}.yaml")
    assert cfg.role == name.split("_")[0]
    assert cfg.model == ("tiny" if name.endswith("tiny") else "monoocc_s")


def test_monoocc_s_configs_use_the_official_optimiser():
    cfg = load_train_config(BUILTIN_CONFIG_DIR / "student_monoocc_s.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == (2e-4, 0.01, 35.0)
    assert (cfg.optim.warmup_iters, cfg.optim.min_lr_ratio) == (500, 1e-3)
    assert (cfg.distill.mode, cfg.distill.weight) == ("released_kl", 3.5)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("role: student\noptim:\n  lr: 1e-3\n  momentum: 0.9\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert "optim.momentum" in str(info.value) and str(path) in str(info.value)


def test_wrong_type_and_literal_are_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: two\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_train_config(path)
    path.write_text("distill:\n  mode: l2\n")
    with pytest.raises(ConfigError, match="distill.mode"):
        load_train_config(path)


def test_overrides_are_typed_by_field(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("role: teacher\n")
    cfg = load_train_config(
        path,
        ["optim.lr=5e-4", "data.train_bags=a,b", "data.temporal_offsets=[-2, -1]", "grad_checkpointing=true"],
    )
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.train_bags == ("a", "b")
    assert cfg.data.temporal_offsets == (-2, -1)
    assert cfg.grad_checkpointing is True
    with pytest.raises(ConfigError, match="optim.nope"):
        load_train_config(path, ["optim.nope=1"])
    with pytest.raises(ConfigError, match="epochs"):
        load_train_config(path, ["epochs=1.5"])


def test_round_trip_through_dict():
    from training.config import train_config_from_dict

    cfg = TrainConfig(epochs=3)
    assert train_config_from_dict(asdict(cfg)) == cfg


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_train_config(Path("/nonexistent/nowhere.yaml"))


def test_override_words_stay_strings_and_yaml_off_gets_a_hint(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("role: student\n")
    assert load_train_config(path, ["distill.mode=off"]).distill.mode == "off"
    path.write_text("distill:\n  mode: off\n")
    with pytest.raises(ConfigError, match="write 'off'"):
        load_train_config(path)


def test_model_overrides_change_the_model_config(tmp_path):
    """Another grid or label set is a config change: ``model_overrides`` reach the run's ModelConfig."""
    from training.model_setup import resolve_model_config

    path = tmp_path / "grid.yaml"
    path.write_text("model: tiny\nmodel_overrides: ['grid.size=[128, 128, 16]', 'grid.voxel_size_m=0.4']\n")
    cfg = load_train_config(path)
    assert cfg.model_overrides == ("grid.size=[128, 128, 16]", "grid.voxel_size_m=0.4")
    model_cfg = resolve_model_config(cfg)
    assert model_cfg.grid.size == (128, 128, 16) and model_cfg.coarse_grid.size == (64, 64, 8)
    assert resolve_model_config(load_train_config(tmp_path / "grid.yaml", ["model_overrides=[]"])).grid.size == (256, 256, 32)
    path.write_text("model: tiny\nmodel_overrides: ['grid.voxel_sise_m=0.4']\n")
    with pytest.raises(ConfigError, match="did you mean 'voxel_size_m'"):
        resolve_model_config(load_train_config(path))


def test_teacher_trunk_is_the_student_trunk_at_backbone_depth():
    from monoocc_ros.models.config import get_model_config
    from training.config import TeacherConfig

    student = get_model_config("tiny").trunk
    trunk = TeacherConfig(backbone_depth=101).trunk(student)
    assert (trunk.depth, trunk.base_width, trunk.num_stages) == (101, student.base_width, student.num_stages)
    assert trunk.stage_blocks == (3, 4, 23)
