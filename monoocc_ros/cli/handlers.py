"""Subcommand handlers named by ``"module:function"`` and imported only when the command runs.

The parsers of :mod:`monoocc_ros.cli` set ``func`` to a :class:`Handler`: building the whole
``monoocc`` parser imports nothing but argparse and these small modules, so ``monoocc --help``
stays fast and the core never needs ``training`` (only the ``train`` and ``experiment``
handlers import it, when they run). The function is looked up on every call, so a test that
monkeypatches it in its module is honoured.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

__all__ = ["Handler"]


@dataclass(frozen=True)
class Handler:
    """``Handler("pkg.module:function")(args)`` imports ``pkg.module`` and returns ``function(args)``."""

    target: str

    def resolve(self):
        """The function itself (imports its module)."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)
