"""``monoocc eval --help`` shows the defaults that say something, not ``(default: None)``."""

from __future__ import annotations

from monoocc_ros import cli


def test_eval_help_has_no_none_or_false_defaults(capsys):
    parser = cli.build_parser()
    eval_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "eval")[1]
    text = " ".join(eval_parser.format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: cpu)" in text and "(default: fp32)" in text and "(default: 1.0)" in text
