"""The examples in the docstrings run and print what they say (``python -m doctest`` per module).

Every module of ``monoocc_ros`` (ROS-free part) and ``training`` that has an example is either
run here or listed in ``NOT_RUN`` with the reason; :func:`test_every_module_with_examples_is_decided`
fails for a new module that is in neither list, so nothing is left out silently. Examples that need
files outside the repository (a bag, a dataset, a checkpoint) carry ``# doctest: +SKIP`` in the
module itself, where the reader sees it.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RUN = [
    "monoocc_ros.calibration",
    "monoocc_ros.config_io",
    "monoocc_ros.data.retarget",
    "monoocc_ros.data.scene",
    "monoocc_ros.data.scene_layout",
    "monoocc_ros.errors",
    "monoocc_ros.evaluation.offline",
    "monoocc_ros.evaluation.report",
    "monoocc_ros.evaluation.submission",
    "monoocc_ros.grid",
    "monoocc_ros.native",
    "monoocc_ros.labels",
    "monoocc_ros.mapping",
    "monoocc_ros.metrics",
    "monoocc_ros.msgs.grid",
    "monoocc_ros.models.config",
    "monoocc_ros.models.deform_attn",
    "monoocc_ros.models.fpn",
    "monoocc_ros.models.pooling",
    "monoocc_ros.models.heads",
    "monoocc_ros.models.profiling",
    "monoocc_ros.models.state_dict",
    "monoocc_ros.models.trunk",
    "monoocc_ros.models.voxel_transformer",
    "monoocc_ros.models.voxel_embeddings",
    "monoocc_ros.model_thread",
    "monoocc_ros.render",
    "monoocc_ros.stamps",
    "monoocc_ros.transforms",
    "training.config",
    "training.cvt",
    "training.schedule",
]

# Sketches of a workflow that use names the example does not define (a model, a batch, K,
# T_cam_grid, images): they show the call, they are not runnable on their own.
NOT_RUN = {
    "monoocc_ros.export": "sketch: needs a trained model and image_rgb_u8/K/T_cam_grid from the caller",
    "monoocc_ros.inference.backends": "sketch: needs a model and inputs from the caller",
    "monoocc_ros.inference.runtimes": "sketch: needs an exported artefact, a model and inputs from the caller",
    "monoocc_ros.inference.stages": "sketch: needs a model and compiled stages from the caller",
    "monoocc_ros.losses": "sketch: needs a model and a batch from the caller",
    "monoocc_ros.models.monoocc": "sketch: K and T_cam_grid come from the caller",
    "monoocc_ros.predictor": "sketch: needs student.pt and a CUDA device",
    "training.distill": "sketch: uses torch without importing it in the example",
    "training.teacher": "sketch: img, K, T and the temporal views come from the caller",
}


def _examples(module) -> tuple[int, int]:
    """(examples, of which marked +SKIP) in ``module`` and its members."""
    tests = doctest.DocTestFinder().find(module)
    examples = [ex for t in tests for ex in t.examples]
    return len(examples), sum(bool(ex.options.get(doctest.SKIP)) for ex in examples)


def _package_modules() -> list[str]:
    names = []
    for package in ("monoocc_ros", "training"):
        for info in pkgutil.walk_packages([str(REPO / package)], package + "."):
            # the rclpy side is not importable without ROS; the generated messages are not ours
            # (whole names: monoocc_ros.msgs, the ROS-free codecs, is ours and checked)
            if info.name.split(".")[:2] not in (["monoocc_ros", "ros"], ["monoocc_ros", "msg"]):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", RUN)
def test_doctests_pass(name, monkeypatch, capsys):
    # Examples name repository files relative to the root, as `python -m doctest` run there would.
    monkeypatch.chdir(REPO)
    module = importlib.import_module(name)
    total, skipped = _examples(module)
    assert total > skipped, f"{name} has no example that runs: move it to NOT_RUN with the reason"
    result = doctest.testmod(module, report=True)
    report = capsys.readouterr().out
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed:\n{report}"
    assert result.attempted == total - skipped


def test_every_module_with_examples_is_decided():
    assert not set(RUN) & set(NOT_RUN)
    undecided = []
    for name in _package_modules():
        module = importlib.import_module(name)
        total, skipped = _examples(module)
        if total > skipped and name not in RUN and name not in NOT_RUN:
            undecided.append(name)
    assert not undecided, f"modules with runnable examples in neither RUN nor NOT_RUN: {undecided}"
