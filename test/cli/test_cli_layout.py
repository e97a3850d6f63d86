"""``monoocc``'s parsers live in :mod:`monoocc_ros.cli`; every subcommand names a handler that exists.

The handlers are imported only when a job runs (:class:`~monoocc_ros.cli.handlers.Handler`), so a
misspelt ``"module:function"`` would pass every ``--help`` and fail at run time: these tests
resolve each one. Building the parser must not import ``training`` or torch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from monoocc_ros.cli import build_parser
from monoocc_ros.cli.handlers import Handler

REPO = Path(__file__).resolve().parents[2]


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every parser without subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaf_parsers(child, path + (name,))


def test_every_subcommand_has_a_handler_that_resolves():
    leaves = dict(_leaf_parsers(build_parser()))
    assert {"eval", "export", "convert-kitti", "generate-scene", "replay", "bench"} <= {p[0] for p in leaves}
    assert ("train", "calibrate") in leaves and ("experiment", "ablation") in leaves
    for path, parser in leaves.items():
        func = parser.get_default("func")
        assert isinstance(func, Handler), path
        assert callable(func.resolve()), (path, func.target)


def test_a_misspelt_handler_fails_to_resolve():
    import pytest

    with pytest.raises(AttributeError):
        Handler("monoocc_ros.evaluation.commands:no_such_function").resolve()


def test_ablation_help_names_the_real_default_config():
    from monoocc_ros.cli.train import ABLATION_DEFAULT_CONFIG
    from training.experiment import DEFAULT_CONFIG

    assert DEFAULT_CONFIG == REPO / ABLATION_DEFAULT_CONFIG


def test_building_the_parser_imports_neither_training_nor_torch():
    code = (
        "import sys; from monoocc_ros.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
