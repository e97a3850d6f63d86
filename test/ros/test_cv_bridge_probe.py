"""A cv_bridge that is installed but cannot load (numpy 1.x build under numpy 2) is not used."""

from __future__ import annotations

import sys

import pytest

from monoocc_ros.ros import image


@pytest.fixture
def fake_cv_bridge(tmp_path, monkeypatch):
    """``write(boost_body)``: a cv_bridge package on sys.path whose compiled part runs ``boost_body``."""

    def write(boost_body: str):
        pkg = tmp_path / "cv_bridge"
        (pkg / "boost").mkdir(parents=True)
        (pkg / "__init__.py").write_text("class CvBridge:\n    pass\n")
        (pkg / "boost" / "__init__.py").write_text("")
        (pkg / "boost" / "cv_bridge_boost.py").write_text(boost_body)
        monkeypatch.syspath_prepend(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("cv_bridge")]:
            monkeypatch.delitem(sys.modules, name)
        image.cv_bridge_available.cache_clear()

    yield write
    image.cv_bridge_available.cache_clear()
    for name in [m for m in sys.modules if m.startswith("cv_bridge")]:
        sys.modules.pop(name)


def test_cv_bridge_built_for_numpy_1_is_not_used(fake_cv_bridge):
    fake_cv_bridge("raise ImportError('numpy.core.multiarray failed to import (compiled using NumPy 1.x)')\n")
    assert image.cv_bridge_available() is False


def test_loadable_cv_bridge_is_used(fake_cv_bridge):
    fake_cv_bridge("def cvtColor2(*args):\n    pass\n")
    assert image.cv_bridge_available() is True
