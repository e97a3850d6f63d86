"""The one typed config loader (monoocc_ros.config_io) behind the model, training and ablation configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from monoocc_ros.config_io import ConfigError, apply_overrides, from_mapping, load_config
from monoocc_ros.errors import UserError


@dataclass(frozen=True)
class Inner:
    widths: tuple[int, int, int] = (1, 2, 3)
    names: tuple[str, ...] = ()
    mode: Literal["off", "on"] = "off"


@dataclass(frozen=True)
class Outer:
    rate: float = 0.5
    steps: Optional[int] = None
    limit: int | None = 4
    enabled: bool = True
    inner: Inner = field(default_factory=Inner)


def test_types_are_checked_and_converted():
    cfg = from_mapping(Outer, {"rate": 1, "steps": 3, "limit": None, "inner": {"widths": [4, 5, 6], "names": ["a"]}})
    assert cfg == Outer(rate=1.0, steps=3, limit=None, inner=Inner(widths=(4, 5, 6), names=("a",)))
    assert isinstance(cfg.rate, float)
    assert from_mapping(Outer, {}) == Outer()  # missing keys take the defaults
    for values, message in [
        ({"rate": "fast"}, "rate: expected float"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"enabled": "maybe"}, "enabled: expected true or false"),
        ({"rate": True}, "rate: expected float"),
        ({"inner": {"widths": [1, 2]}}, r"inner.widths: expected 3 values, got 2"),
        ({"inner": {"widths": [1, 2, "x"]}}, r"inner.widths\[2\]: expected int"),
        ({"inner": {"mode": False}}, "write 'off'"),
        ({"inner": 3}, "inner: expected a mapping"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_mapping(Outer, values)


def test_unknown_keys_name_the_dotted_key_and_the_closest_field():
    with pytest.raises(ConfigError, match=r"unknown key inner\.widht \(did you mean 'widths'\?; allowed: mode, names, widths\)"):
        from_mapping(Outer, {"inner": {"widht": [1, 2, 3]}})
    with pytest.raises(ConfigError, match=r"unknown key zzz \(allowed: enabled, inner, limit, rate, steps\)"):
        from_mapping(Outer, {"zzz": 1})
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


def test_dotted_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(Outer(), ["rate=2e-3", "steps=7", "inner.widths=[7, 8, 9]", "inner.names=a,b", "inner.mode=on",
                                    "enabled=false", "limit=null"])
    assert cfg == Outer(rate=2e-3, steps=7, limit=None, enabled=False, inner=Inner((7, 8, 9), ("a", "b"), "on"))
    with pytest.raises(ConfigError, match=r"unknown key inner\.mdoe \(did you mean 'mode'\?"):
        apply_overrides(Outer(), ["inner.mdoe=on"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(Outer(), ["rate"])
    with pytest.raises(ConfigError, match="overrides: steps: expected an integer"):
        apply_overrides(Outer(), ["steps=2.5"])


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rate: 0.25\ninner:\n  names: [x]\n")
    assert load_config(Outer, path, ["steps=1"]) == Outer(rate=0.25, steps=1, inner=Inner(names=("x",)))
    path.write_text("inner:\n  nmaes: [x]\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key inner\.nmaes \(did you mean 'names'"):
        load_config(Outer, path)
    path.write_text("rate: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        load_config(Outer, tmp_path / "nowhere.yaml")


def test_exact_mode_refuses_to_convert():
    """Values the program wrote itself (stored configs) are not text: a wrong type is a TypeError."""
    assert from_mapping(Outer, {"rate": 1, "inner": {"widths": [1, 2, 3]}}, exact=True) == Outer(rate=1.0)
    for values, message in [
        ({"steps": "3"}, r"steps: expected int, got str '3'"),
        ({"rate": "0.5"}, "rate: expected float, got str"),
        ({"enabled": 1}, "enabled: expected bool, got int"),
        ({"inner": {"names": "a,b"}}, "inner.names: expected a list"),
    ]:
        with pytest.raises((TypeError, ConfigError), match=message):
            from_mapping(Outer, values, exact=True)
    assert from_mapping(Outer, {"steps": "3"}).steps == 3  # text (YAML, overrides) is converted


def test_model_config_is_type_checked_by_the_same_loader():
    """The model loader used to pass any value through; a wrong type now fails at load, naming the key."""
    from monoocc_ros.models.config import model_config_from_dict

    with pytest.raises(TypeError, match=r"voxel\.embed_dim: expected int, got str 'wide'"):
        model_config_from_dict({"voxel": {"embed_dim": "wide"}})
    with pytest.raises(ConfigError, match=r"proposal\.qpn_widths: expected 4 values"):
        model_config_from_dict({"proposal": {"qpn_widths": [8, 8]}})
    with pytest.raises(ConfigError, match=r"did you mean 'num_dsa_layers'"):
        model_config_from_dict({"voxel": {"num_dsa_layer": 2}})
