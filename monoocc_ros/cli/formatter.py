"""The help formatter of ``monoocc`` subcommands: defaults shown only where they say something.

``argparse.ArgumentDefaultsHelpFormatter`` appends ``(default: None)`` to every option without a
default and ``(default: False)`` to every flag, which buries the defaults that matter.
"""

from __future__ import annotations

import argparse

__all__ = ["DefaultsHelpFormatter"]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless X is None, a flag's False, or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
