"""The one marker for mistakes a user can fix: a missing or malformed file, a bad parameter.

Error classes that describe such a mistake (``CheckpointError``, ``BagReadError``,
``KittiFormatError``, ``ConfigError`` ...) also derive from :class:`UserError`, with a message
that names the file, topic or parameter. ``monoocc`` (:func:`monoocc_ros.cli.main`) prints those, and
``OSError`` s, as one line and exits 2 instead of showing a traceback, whatever subcommand raised
them; bugs (every other exception) keep their traceback. No imports here: the CLI loads this
module before any heavy one.
"""

from __future__ import annotations

__all__ = ["UserError", "one_line"]


class UserError(Exception):
    """A mistake in the user's input; ``str(error)`` is one line naming what to fix."""


def one_line(err: BaseException) -> str:
    """``str(err)`` with every run of whitespace, newlines included, made one space.

    Torch and other libraries raise multi-line messages; a log line or a CLI error must stay one line.

    >>> one_line(ValueError("bad file\\n  see above"))
    'bad file see above'
    """
    return " ".join(str(err).split())
