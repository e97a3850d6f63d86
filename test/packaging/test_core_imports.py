"""The ROS-free core imports without ``training``, ROS or the CLI.

The core is ``monoocc_ros`` minus :mod:`monoocc_ros.ros` (the rclpy node and its helpers), the
generated ``monoocc_ros.msg`` and the ``monoocc`` command (:mod:`monoocc_ros.cli`, whose training
jobs import ``training`` when they run). ``rosbags`` is allowed: it is the pure-Python
bag reader of the data layer, not ROS. A fresh interpreter gets a meta-path finder that raises
``ImportError`` for the forbidden packages, then imports every core module; a top-level import
of any of them anywhere in the core fails the test with the module that did it. A second test
reads the source: no module of ``monoocc_ros`` outside ``cli/`` imports ``training`` at all, not
even inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN = (
    "training",
    "rclpy",
    "rosidl_runtime_py",
    "rosidl_parser",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "rosgraph_msgs",
    "visualization_msgs",
    "tf2_ros",
    "tf2_msgs",
    "launch",
    "launch_ros",
    "ament_index_python",
    "monoocc_ros.ros",
    "monoocc_ros.msg",
    "monoocc_ros.cli",
)

# Named in the issue; the walk below must find them, so a wrong path cannot pass vacuously.
REQUIRED = (
    "monoocc_ros.camera",
    "monoocc_ros.evaluation.offline",
    "monoocc_ros.grid",
    "monoocc_ros.labels",
    "monoocc_ros.losses",
    "monoocc_ros.mapping.semantic_map",
    "monoocc_ros.metrics",
    "monoocc_ros.models.monoocc",
    # the message codecs the node shares with the bag tools must stay importable without ROS
    "monoocc_ros.msgs.bag_messages",
    "monoocc_ros.msgs.decode",
    "monoocc_ros.msgs.markers",
    "monoocc_ros.predictor",
    "monoocc_ros.stamps",
    "monoocc_ros.transforms",
)

SCRIPT = r"""
import importlib, importlib.abc, pkgutil, sys, traceback

root, forbidden, required = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
sys.path.insert(0, root)


def blocked(name):
    return any(name == f or name.startswith(f + ".") for f in forbidden)


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ImportError(f"{name} is not allowed in the core")
        return None


sys.meta_path.insert(0, Block())
try:
    import training  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("the blocker does not work: training imported")

import monoocc_ros
assert monoocc_ros.__path__[0].startswith(root), monoocc_ros.__path__
names = [i.name for i in pkgutil.walk_packages([root + "/monoocc_ros"], "monoocc_ros.")
         if not blocked(i.name) and "rosidl" not in i.name]
missing = sorted(set(required) - set(names))
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=-3).strip().replace("\n", "\n    "))
loaded = sorted(m for m in sys.modules if blocked(m))
print(f"imported {len(names) - len(failed)} core modules")
if missing or failed or loaded:
    sys.exit(f"not found: {missing}\nfailed:\n" + "\n".join(failed) + f"\nforbidden modules loaded: {loaded}")
"""


def core_import_check(root: Path) -> subprocess.CompletedProcess:
    """Import every core module of the tree at ``root`` in a fresh interpreter, ROS/training blocked."""
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), ",".join(FORBIDDEN), ",".join(REQUIRED)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_core_imports_without_training_ros_or_cli():
    proc = core_import_check(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "imported" in proc.stdout


def training_imports(package: Path) -> list[str]:
    """``path:line`` of every ``import training...`` / ``from training... import`` below ``package``
    outside its ``cli/`` folder, at any depth of the code (function bodies included)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(n == "training" or n.startswith("training.") for n in names):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return found


def test_only_the_cli_imports_training(tmp_path):
    assert (REPO / "monoocc_ros" / "cli" / "train.py").is_file()  # the walk skips the folder that exists
    assert training_imports(REPO / "monoocc_ros") == []
    # the check sees an import hidden in a function body
    bad = tmp_path / "pkg"
    bad.mkdir()
    (bad / "mod.py").write_text("def f():\n    from training.train import run_training\n    return run_training\n")
    assert training_imports(bad) == ["pkg/mod.py:2"]
