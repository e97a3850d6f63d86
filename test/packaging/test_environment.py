"""Set-up from scratch: pip-only install without ROS, and clear messages for a bad environment."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
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
        # runuser lives in sbin, which a minimal PATH (env -i, some CI images) leaves out
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), "runuser"
        )
        cmd = [runuser, "-u", user, "--", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "AMENT_", "COLCON"))}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(REPO))
    )
    return env


# Like tox: the pip-only venv is made from scratch whenever the dependencies (setup.py) or the
# interpreter change, and reused otherwise; unpacking 2.3 GB of wheels again proves nothing new.
PIP_ONLY_VENV = REPO / ".cache" / "pip-only-venv"
DEPS_STAMP = PIP_ONLY_VENV / "monoocc-deps.sha256"


def deps_key() -> str:
    return hashlib.sha256((REPO / "setup.py").read_bytes() + sys.version.encode()).hexdigest()


def pip_install_in_pip_only_venv(project: Path) -> Path:
    """``pip install -e project`` in a venv made by ``venv`` + pip only; returns the venv."""
    if not (DEPS_STAMP.is_file() and DEPS_STAMP.read_text() == deps_key()):
        shutil.rmtree(PIP_ONLY_VENV, ignore_errors=True)
        venv.create(PIP_ONLY_VENV, with_pip=True)
    install = subprocess.run(
        [str(PIP_ONLY_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(project)],
        capture_output=True, text=True, timeout=900, env=clean_env(),
    )
    assert install.returncode == 0, install.stderr[-3000:]
    DEPS_STAMP.write_text(deps_key())
    return PIP_ONLY_VENV


def test_pip_install_without_ros_gives_core_and_cli(tmp_path):
    project = copy_project(tmp_path / "project")
    PIP_ONLY_VENV.parent.mkdir(exist_ok=True)
    with open(PIP_ONLY_VENV.parent / "pip-only-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs on one machine share the venv
        env_dir = pip_install_in_pip_only_venv(project)
        check = subprocess.run(
            [str(env_dir / "bin" / "python"), "-c",
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


def test_project_environment_preloads_tcmalloc():
    # the bootstrap installs libtcmalloc-minimal4 and env.sh preloads it into every process
    env = clean_env()
    env.pop("LD_PRELOAD", None)
    probe = "import sys; sys.exit(0 if 'libtcmalloc_minimal' in open('/proc/self/maps').read() else 3)"
    result = subprocess.run(
        ["bash", "-c", f'. "{REPO}/scripts/env.sh" && python -c "{probe}"'],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"tcmalloc is not loaded in the project environment: {result.stderr[-2000:]}"


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
