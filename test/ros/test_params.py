"""Parameter declaration, validation and fail-fast configure, on the real node class."""

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from monoocc_ros.ros.node import ModelLoadError, MonoOccNode, load_predictor
from monoocc_ros.ros.params import ParameterError, read_parameters, resolve_device


@pytest.fixture()
def make_node(ros_domain):
    made = []

    def make(**overrides):
        node = MonoOccNode(
            node_name=f"params_test_{len(made)}",
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        made.append(node)
        return node

    yield make
    for node in made:
        node.destroy_node()


def test_out_of_range_values_are_rejected_with_the_reason(make_node):
    node = make_node(checkpoint_path="/x.pt", config_name="")
    result = node.set_parameters([Parameter("cloud_rate_hz", value=500.0)])[0]
    assert not result.successful
    assert "cloud_rate_hz out of range" in result.reason and "Max: 100.0" in result.reason
    assert node.get_parameter("cloud_rate_hz").value == 10.0
    result = node.set_parameters([Parameter("markers_alpha", value=-0.1)])[0]
    assert not result.successful and "markers_alpha out of range" in result.reason
    result = node.set_parameters([Parameter("markers_max_voxels", value=-1)])[0]
    assert not result.successful and "markers_max_voxels out of range" in result.reason
    result = node.set_parameters([Parameter("markers_rate_hz", value=5.0)])[0]
    assert result.successful and node.get_parameter("markers_rate_hz").value == 5.0


def test_read_only_parameters_cannot_change_at_run_time(make_node):
    node = make_node(checkpoint_path="/x.pt", config_name="")
    result = node.set_parameters([Parameter("precision", value="fp16")])[0]
    assert not result.successful and "read-only" in result.reason


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"config_name": "tiny"}, "'checkpoint_path' is required and not set"),
        ({"checkpoint_path": "", "config_name": ""}, "checkpoint_path is empty"),
        ({"checkpoint_path": "/x.pt", "config_name": "", "precision": "fp8"}, "precision 'fp8' must be one of"),
        ({"checkpoint_path": "/x.pt", "config_name": "", "device": "gpu0"}, "device 'gpu0' must be cpu"),
        ({"checkpoint_path": "/x.pt", "config_name": "", "input_qos": "fast"}, "input_qos 'fast'"),
        (
            {"checkpoint_path": "/x.pt", "config_name": "", "static_T_cam_grid.rotation_xyzw": [0.0, 0.0, 0.0, 2.0]},
            "static_T_cam_grid.*.*not unit length",
        ),
    ],
)
def test_bad_or_missing_parameters_fail_configure_with_a_clear_reason(make_node, overrides, match):
    node = make_node(**overrides)
    with pytest.raises(ParameterError, match=match):
        read_parameters(node)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_missing_checkpoint_file_fails_configure_naming_the_file(make_node, tmp_path):
    node = make_node(checkpoint_path=str(tmp_path / "nope.pt"), config_name="", warmup_image_size=[0, 0])
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.predictor is None


def test_checkpoint_of_another_config_fails_configure_naming_both(make_node, tiny_checkpoint):
    node = make_node(checkpoint_path=str(tiny_checkpoint), config_name="monoocc_s", warmup_image_size=[0, 0])
    with pytest.raises(ModelLoadError, match="holds model config 'tiny', but parameter config_name is 'monoocc_s'"):
        load_predictor(read_parameters(node))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_fp16_on_cpu_fails_configure_with_the_predictor_reason(make_node, tiny_checkpoint):
    node = make_node(checkpoint_path=str(tiny_checkpoint), config_name="tiny", precision="fp16")
    with pytest.raises(ModelLoadError, match="fp16.*needs a CUDA device"):
        load_predictor(read_parameters(node))


def test_config_name_is_optional_the_model_config_comes_from_the_checkpoint(make_node):
    # config/monoocc.yaml and the launch file must work with any checkpoint: '' accepts any
    assert read_parameters(make_node(checkpoint_path="/x.pt")).config_name == ""


def test_auto_device_and_precision_resolve_to_what_the_machine_has(make_node, monkeypatch):
    import torch

    params = read_parameters(make_node(checkpoint_path="/x.pt"))
    expected = ("cuda", "fp16") if torch.cuda.is_available() else ("cpu", "fp32")
    assert (params.device, params.precision) == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "auto") == ("cuda", "fp16")
    assert resolve_device("cuda:1", "auto") == ("cuda:1", "fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "auto") == ("cpu", "fp32")
    assert resolve_device("auto", "bf16") == ("cpu", "bf16")


def test_integer_for_a_double_parameter_is_taken_as_that_double(make_node):
    # the YAML slip `tf_timeout_s: 1` (and integer lists for double lists) at start-up and at run time
    node = make_node(checkpoint_path="/x.pt", tf_timeout_s=1, **{"static_T_cam_grid.translation": [0, 0, 1]})
    assert node.get_parameter("tf_timeout_s").value == 1.0
    assert node.get_parameter("tf_timeout_s").type_ == Parameter.Type.DOUBLE
    assert node.get_parameter("static_T_cam_grid.translation").value == [0.0, 0.0, 1.0]
    assert read_parameters(node).tf_timeout_s == 1.0
    result = node.set_parameters([Parameter("cloud_rate_hz", value=5)])[0]
    assert result.successful, result.reason
    assert node.get_parameter("cloud_rate_hz").value == 5.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"markers_max_voxels": 1.5}, "parameter 'markers_max_voxels' must be of type integer, got 1.5 (type double)"),
        ({"device": 3}, "parameter 'device' must be of type string, got 3 (type integer)"),
        ({"warmup_image_size": [1.0, 2.0]}, "parameter 'warmup_image_size' must be of type integer list"),
        ({"cloud_rate_hz": 500.0}, "parameter 'cloud_rate_hz' = 500.0 is out of range [0.0, 100.0]"),
        ({"tf_timeout_s": 9}, "parameter 'tf_timeout_s' = 9.0 is out of range [0.0, 5.0]"),
        ({"markers_max_voxels": -1}, "parameter 'markers_max_voxels' = -1 is out of range [0, 2097152]"),
    ],
)
def test_wrong_type_or_range_at_start_up_is_one_line_naming_the_parameter(ros_domain, overrides, message):
    overrides = [Parameter(k, value=v) for k, v in overrides.items()]
    with pytest.raises(ParameterError) as info:
        MonoOccNode(node_name="params_type_test", parameter_overrides=overrides)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_misspelt_parameter_fails_configure_naming_it_and_the_close_match(make_node):
    node = make_node(checkpoint_path="/x.pt", tf_timout_s=0.5, bogus=1)
    expected = r"unknown parameters 'bogus', 'tf_timout_s' \(did you mean 'tf_timeout_s'\?\)"
    with pytest.raises(ParameterError, match=expected):
        read_parameters(node)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_checkpoint_path_is_expanded_and_frame_ids_lose_a_leading_slash(make_node):
    import os

    node = make_node(checkpoint_path="~/models/x.pt", grid_frame="/velodyne", camera_frame="/camera_optical")
    params = read_parameters(node)
    assert params.checkpoint_path == os.path.expanduser("~/models/x.pt") != "~/models/x.pt"
    assert (params.grid_frame, params.camera_frame) == ("velodyne", "camera_optical")


def test_unused_static_extrinsic_is_not_checked_while_tf2_gives_the_pose(make_node):
    node = make_node(checkpoint_path="/x.pt", **{"static_T_cam_grid.rotation_xyzw": [0.0, 0.0, 0.0, 2.0]})
    assert read_parameters(node, static_extrinsic=False).static_T_cam_grid is None
    with pytest.raises(ParameterError, match="not unit length"):
        read_parameters(node)


def test_unexpected_model_build_error_is_one_line_naming_the_checkpoint(make_node, tiny_checkpoint, tmp_path):
    # a model_config value of the wrong type makes the model constructor raise TypeError
    import torch

    from monoocc_ros.models.checkpoint import save_checkpoint

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["model_config"]["head"]["num_classes"] = "20"
    bad = save_checkpoint(tmp_path / "bad_config.pt", payload)
    node = make_node(checkpoint_path=str(bad), warmup_image_size=[0, 0])
    with pytest.raises(ModelLoadError, match=rf"checkpoint_path '{bad}': TypeError: "):
        load_predictor(read_parameters(node))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
