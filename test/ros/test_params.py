"""Parameter declaration, validation and fail-fast configure, on the real node class."""

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from monoocc_ros.ros.node import ModelLoadError, MonoOccNode, load_predictor
from monoocc_ros.ros.params import ParameterError, read_parameters


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
        ({"checkpoint_path": "/x.pt"}, "'config_name' is required and not set"),
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
