"""``make demo`` (scripts/run_demo.sh) reuses a step's result only when its settings are today's.

The script's commands are replaced by exported bash functions (bash looks those up before
PATH) that only log their arguments and create what the next step reads, so the test sees which
steps a run redoes. The fake ``monoocc eval`` fails, so every run stops at step 4, after the
last cached step.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKES = r"""
monoocc() {
  echo "monoocc $*" >>"$FAKE_LOG"
  case "$1" in
    generate-scene) mkdir -p "$2/sequences/$4" && touch "$2/sequences/$4/times.txt" ;;
    convert-kitti) mkdir -p "$4" && touch "$4/metadata.yaml" ;;
    eval) echo "fake eval: the demo stops here" >&2; return 9 ;;
  esac
}
python() {  # the node (python -m ...) runs until the script ends; the other calls read a heredoc
  echo "python $*" >>"$FAKE_LOG"
  if [ "$1" = "-m" ]; then while kill -0 $$ 2>/dev/null; do command sleep 0.1; done; return 0; fi
  cat >/dev/null
}
sleep() { :; }
export -f monoocc python sleep
exec bash scripts/run_demo.sh
"""


def _run(tmp_path: Path, **settings: str) -> tuple[list[str], str]:
    """Run the demo once with ``settings`` (DEMO_* variables); (monoocc commands run, stdout)."""
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "DEMO_OUT": str(tmp_path / "demo"), "FAKE_LOG": str(log), **settings}
    proc = subprocess.run(["bash", "-c", FAKES], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9 and "fake eval: the demo stops here" in proc.stderr, proc.stdout + proc.stderr
    calls = [c.split(" ", 1)[1] for c in log.read_text().splitlines() if c.startswith("monoocc ")]
    assert calls[-1].startswith("eval ")
    return calls[:-1], proc.stdout


def _kinds(calls: list[str]) -> list[str]:
    """'generate-scene 08', 'convert-kitti 08', 'train' ... of the commands run."""
    out = []
    for c in calls:
        words = c.split()
        if words[0] == "generate-scene":
            out.append(f"generate-scene {words[words.index('--sequence') + 1]}")
        elif words[0] == "convert-kitti":
            out.append(f"convert-kitti {words[2]}")
        else:
            out.append(words[0])
    return out


def test_changed_settings_redo_the_steps_that_depend_on_them(tmp_path):
    base = {"DEMO_TRAIN_FRAMES": "6", "DEMO_EVAL_FRAMES": "4", "DEMO_TRAIN_STEPS": "3"}
    calls, _ = _run(tmp_path, **base)
    assert _kinds(calls) == ["generate-scene 00", "generate-scene 08", "convert-kitti 00", "convert-kitti 08", "train"]

    calls, out = _run(tmp_path, **base)
    assert _kinds(calls) == [] and out.count("reusing") == 5

    calls, out = _run(tmp_path, **{**base, "DEMO_TRAIN_STEPS": "7"})
    assert _kinds(calls) == ["train"] and "max_steps=7" in calls[0]
    assert "settings changed" in out and "steps=3" in out and "steps=7" in out

    calls, out = _run(tmp_path, **{**base, "DEMO_TRAIN_STEPS": "7", "DEMO_EVAL_FRAMES": "9"})
    assert _kinds(calls) == ["generate-scene 08", "convert-kitti 08"]  # the student is trained on 00 only
    assert "--frames 9" in calls[0] and "settings changed" in out

    calls, _ = _run(tmp_path, **{**base, "DEMO_TRAIN_STEPS": "7", "DEMO_EVAL_FRAMES": "9", "DEMO_TRAIN_FRAMES": "8"})
    assert _kinds(calls) == ["generate-scene 00", "convert-kitti 00", "train"]


def test_a_demo_folder_without_stamps_is_made_again(tmp_path):
    """A demo_out/ of an older script (no stamps) cannot say what it was made with."""
    demo = tmp_path / "demo"
    (demo / "kitti" / "sequences" / "00").mkdir(parents=True)
    (demo / "kitti" / "sequences" / "00" / "times.txt").touch()
    (demo / "student").mkdir()
    (demo / "student" / "done").touch()
    calls, out = _run(tmp_path)
    assert "train" in _kinds(calls) and "generate-scene 00" in _kinds(calls)
    assert "has no settings stamp" in out
