"""``monoocc eval --backend``: the offline evaluation runs the node's inference backends."""

from __future__ import annotations

import json

import pytest

from monoocc_ros.evaluation.submission import read_prediction

# the ONNX export is the slow part: one worker runs these together (as test/perf/test_backends.py)
pytestmark = pytest.mark.xdist_group("tiny_onnx")


def _predictions(root):
    return {p.name: read_prediction(p) for p in sorted(root.glob("sequences/*/predictions/*.label"))}


def test_eval_onnxruntime_agrees_with_eager_and_names_its_backend(gt_bag, tiny_checkpoint, eval_cli, tmp_path):
    runs = {}
    for backend in ("eager", "onnxruntime"):
        out = tmp_path / backend
        rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(tiny_checkpoint), "--out", str(out / "report"),
                       "--export-submission", str(out / "sub"), "--backend", backend, "--no-progress"])
        assert rc == 0
        report = json.loads((out / "report" / "metrics.json").read_text())
        assert report["backend"] == backend
        assert report["frames"]["failed"] == 0, report["problems"]
        runs[backend] = _predictions(out / "sub")
    assert len(runs["eager"]) == 2 and runs["eager"].keys() == runs["onnxruntime"].keys()
    for name, eager in runs["eager"].items():
        agreement = float((runs["onnxruntime"][name] == eager).mean())
        assert agreement >= 0.995, (name, agreement)
    # the graph is the node's artefact: cached next to the checkpoint by its hash
    assert list(tiny_checkpoint.parent.glob(f"{tiny_checkpoint.stem}.*.onnxruntime.*.onnx"))


@pytest.mark.parametrize("extra, words", [
    (["--queries", "q"], ["--queries", "eager"]),
    (["--calibration"], ["--calibration", "eager"]),
    (["--precision", "bf16"], ["fp32"]),
    (["--live"], ["offline"]),
])
def test_backend_refusals_are_one_line(gt_bag, tiny_checkpoint, eval_cli, tmp_path, capsys, extra, words):
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "r"),
                   "--backend", "onnxruntime", "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_tensorrt_without_cuda_is_one_line(gt_bag, tiny_checkpoint, eval_cli, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the no-CUDA message is what is tested")
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "r"),
                   "--backend", "tensorrt", "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "tensorrt needs a CUDA GPU" in err, err


def test_aotinductor_not_built_is_one_line_naming_the_export(gt_bag, tiny_checkpoint, eval_cli, tmp_path, capsys):
    rc = eval_cli(["eval", str(gt_bag), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "r"),
                   "--backend", "aotinductor", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "monoocc export" in err and "aotinductor" in err, err
    assert not (tmp_path / "r" / "metrics.json").exists()
