"""Set-up from scratch: pip-only install without ROS, and clear messages for a bad environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING_FILES = ["setup.py", "package.xml", "CMakeLists.txt", "msg", "monoocc_ros", "training", "scripts"]


def copy_project(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in PACKAGING_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


def run_bootstrap(project: Path, env: dict[str, str], user: str | None = None):
    cmd = ["bash", str(project / "scripts" / "bootstrap.sh")]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "AMENT_", "COLCON"))}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(REPO))
    )
    return env


@pytest.mark.slow
def test_pip_install_without_ros_gives_core_and_cli(tmp_path):
    project = copy_project(tmp_path / "project")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-e", str(project)],
        capture_output=True, text=True, timeout=900, env=clean_env(),
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(
        [str(py), "-c",
         "import importlib.util, monoocc_ros.grid, monoocc_ros.camera, monoocc_ros.labels;"
         "assert importlib.util.find_spec('rclpy') is None, 'ROS leaked into the venv';"
         "print(monoocc_ros.grid.KITTI_GRID.num_voxels)"],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "2097152"
    helped = subprocess.run(
        [str(env_dir / "bin" / "monoocc"), "--help"],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=tmp_path,
    )
    assert helped.returncode == 0, helped.stderr
    assert "usage: monoocc" in helped.stdout


def assert_clear_failure(result, *needles: str):
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, out


def test_bootstrap_refuses_old_python(tmp_path):
    old = sorted(Path("/root/.pyenv/versions").glob("3.[6-9].*/bin/python3"))
    if not old:
        pytest.fail("this machine kind ships pyenv Pythons 3.6-3.9; none found to test with")
    project = copy_project(tmp_path / "project")
    env = clean_env() | {"MONOOCC_PYTHON": str(old[-1])}
    result = run_bootstrap(project, env)
    assert_clear_failure(result, "Python 3.10-3.12", "is required")
    assert not (project / ".venv").exists()


def test_bootstrap_reports_unwritable_folder():
    # pytest's tmp_path is private to root; nobody must be able to read the copied project.
    top = Path(tempfile.mkdtemp(prefix="monoocc-ro-", dir="/tmp"))
    try:
        top.chmod(0o755)
        project = copy_project(top / "project")
        result = run_bootstrap(project, clean_env(), user="nobody")
        assert_clear_failure(result, "no write access", str(project))
    finally:
        shutil.rmtree(top)


def test_bootstrap_reports_unreachable_registry(tmp_path):
    project = copy_project(tmp_path / "project")
    env = clean_env() | {
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": os.devnull,
    }
    result = run_bootstrap(project, env)
    assert_clear_failure(result, "could not reach the package registry")
