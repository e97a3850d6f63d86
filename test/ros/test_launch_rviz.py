"""The shipped launch file and RViz config agree with the node's topic names and frame."""

import ast
import importlib.util
from pathlib import Path

import yaml

from monoocc_ros import topics
from monoocc_ros.ros.node import NODE_NAME

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "monoocc.launch.py"
RVIZ_FILE = ROOT / "config" / "monoocc.rviz"
PARAMS_FILE = ROOT / "config" / "monoocc.yaml"
LAUNCH_ARGS = {"params_file", "checkpoint", "namespace", "image", "camera_info", "use_sim_time", "rviz"}


def _displays():
    cfg = yaml.safe_load(RVIZ_FILE.read_text())
    return cfg["Visualization Manager"], {d["Class"]: d for d in cfg["Visualization Manager"]["Displays"]}


def test_rviz_config_matches_node_topics_and_grid_frame():
    manager, displays = _displays()
    assert manager["Global Options"]["Fixed Frame"] == topics.GRID_FRAME
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == topics.IMAGE
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == f"/{NODE_NAME}/output/markers"
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == f"/{NODE_NAME}/output/occupied_voxels"
    assert cloud["Style"] == "Boxes" and cloud["Size (m)"] == 0.2 and cloud["Color Transformer"] == "RGB8"
    assert "rviz_default_plugins/TF" in displays


def test_params_file_sets_only_declared_parameters():
    from monoocc_ros.ros.params import parameter_names

    params = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]

    def flatten(d, prefix=""):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    names = set(flatten(params))
    declared = set(parameter_names())
    assert names <= declared, names - declared
    assert "checkpoint_path" not in names  # no default: must be given, fails fast otherwise
    assert declared - names == {"checkpoint_path"}


def test_launch_file_declares_arguments_and_remaps_inputs():
    has_launch = all(importlib.util.find_spec(m) is not None for m in ("launch_ros", "launch.actions"))
    if has_launch:
        spec = importlib.util.spec_from_file_location("monoocc_launch", LAUNCH_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from launch.actions import DeclareLaunchArgument

        description = module.generate_launch_description()
        declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
        assert declared == LAUNCH_ARGS
        return
    # No `launch` here: check the file's structure statically.
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = {c.args[0].value for c in calls if c.func.id == "DeclareLaunchArgument"}
    assert declared == LAUNCH_ARGS
    nodes = [c for c in calls if c.func.id == "Node"]
    kw = {k.arg: k.value for k in nodes[0].keywords}
    assert ast.literal_eval(kw["executable"]) == "monoocc_node" and ast.literal_eval(kw["name"]) == NODE_NAME
    remapped = {e.elts[0].value for e in kw["remappings"].elts}
    assert remapped == {"~/input/image", "~/input/camera_info"}
    assert {ast.literal_eval(k.value) for k in nodes[1].keywords if k.arg == "executable"} == {"rviz2"}
    assert any(isinstance(f, ast.FunctionDef) and f.name == "generate_launch_description" for f in tree.body)
