"""``monoocc``: a user's mistake is one line naming the file and exit status 2, never a traceback."""

from __future__ import annotations

import pytest

from monoocc_ros import cli


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_eval_of_a_folder_that_is_not_a_bag(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "not_a_bag"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    rc = cli.main(["eval", str(folder), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                   "--no-progress"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith("monoocc eval: error:") and str(folder) in line and "metadata.yaml" in line


def test_eval_of_a_file_that_is_not_a_bag(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "frames.txt"
    path.write_text("hello\n")
    rc = cli.main(["eval", str(path), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                   "--no-progress"])
    assert rc == 2
    assert str(path) in _one_error_line(capsys)


def test_export_of_a_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    rc = cli.main(["export", "--checkpoint", str(missing), "--output", str(tmp_path / "m.onnx")])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith("monoocc export: error:") and str(missing) in line
    assert not (tmp_path / "m.onnx").exists()


def test_export_of_a_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip file")
    assert cli.main(["export", "--checkpoint", str(bad), "--output", str(tmp_path / "m.onnx")]) == 2
    assert str(bad) in _one_error_line(capsys)


def test_os_errors_of_any_subcommand_are_one_line(monkeypatch, tmp_path, capsys):
    """The handler is in ``cli.main``, not in each subcommand: an OSError anywhere names its file."""
    from monoocc_ros.models import commands

    def _raise(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked.onnx"))

    monkeypatch.setattr(commands, "_run_export", _raise)
    rc = cli.main(["export", "--config", "tiny", "--output", str(tmp_path / "locked.onnx")])
    assert rc == 2
    assert "locked.onnx" in _one_error_line(capsys)


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    """Only user-facing errors are shortened; a programming error still raises."""
    from monoocc_ros.models import commands

    def _bug(args):
        raise KeyError("internal")

    monkeypatch.setattr(commands, "_run_export", _bug)
    with pytest.raises(KeyError):
        cli.main(["export", "--config", "tiny", "--output", str(tmp_path / "m.onnx")])
