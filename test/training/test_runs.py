"""End-to-end training on a generated bag: teacher -> student, cache, resume, DDP, errors.

Every run uses the tiny configs at 1/8 image scale on a handful of frames; the teacher is
trained once per run and shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.config import BUILTIN_CONFIG_DIR, load_train_config
from training.dump import dump_teacher
from training.errors import NonFiniteLossError, TrainingError
from training.train import run_training
from training.trainer import LOSS_LOG, Trainer

REPO = Path(__file__).resolve().parents[2]
# the tests that use the module's teacher run on one xdist worker, which trains it once
SHARES_TEACHER = pytest.mark.xdist_group("teacher_run")
FAST = ["data.image_scale=0.125", "num_workers=0", "log_images=false", "device=cpu"]


def teacher_overrides(bag: Path, out: Path) -> list[str]:
    return FAST + [
        f"data.train_bags={bag}",
        f"data.val_bags={bag}",
        "data.max_train_frames=2",
        "data.max_val_frames=1",
        "data.temporal_offsets=[-2]",
        "teacher.cvt_layers=2",
        "epochs=1",
        f"out_dir={out}",
    ]


def student_overrides(bag: Path, out: Path, teacher: Path | None, *extra: str) -> list[str]:
    items = FAST + [f"data.train_bags={bag}", "validate=false", "epochs=1", f"out_dir={out}"]
    items += [f"distill.teacher_checkpoint={teacher}"] if teacher else ["distill.mode=off", "distill.teacher_checkpoint="]
    return items + list(extra)


def read_losses(out: Path) -> dict[int, float]:
    steps = {}
    for line in (out / LOSS_LOG).read_text().splitlines():
        record = json.loads(line)
        steps.setdefault(record["step"], []).append(record["loss"])
    return steps


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun_train(role: str, cfg_name: str, items: list[str], hash_dir: Path) -> str:
    """``torchrun --nproc_per_node 2 -m training train <role>`` (gloo on CPU); each rank writes its weights' hash.

    Returns the job's stderr.
    """
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training", "train", role,
           str(BUILTIN_CONFIG_DIR / cfg_name), "--hash-dir", str(hash_dir)]
    for item in items:
        cmd += ["--set", item]
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-4000:]
    # log lines come from rank 0 only (the other rank prints warnings and errors alone)
    assert done.stderr.count(f"{role} training finished") == 1, done.stderr[-4000:]
    return done.stderr


def rank_hashes(hash_dir: Path) -> list[dict]:
    return [json.loads((hash_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


# The teacher every test here distils from is trained by 2 torchrun ranks, the DDP path itself.
# Session scope: xdist may run other modules between the group's tests, which would end a module fixture.
@pytest.fixture(scope="session")
def teacher_run(synthetic_bag, tmp_path_factory) -> tuple[Path, Path]:
    """(out_dir, hash_dir) of the tiny teacher: 2 frames over 2 ranks, one step each, validated."""
    out = tmp_path_factory.mktemp("teacher")
    hashes = tmp_path_factory.mktemp("teacher_hashes")
    torchrun_train("teacher", "teacher_tiny.yaml", teacher_overrides(synthetic_bag, out) + ["log_images=true"], hashes)
    return out, hashes


@SHARES_TEACHER
@pytest.mark.slow  # trains the shared teacher
def test_teacher_trains_validates_and_checkpoints(teacher_run):
    from monoocc_ros.models.checkpoint import load_checkpoint

    out, _ = teacher_run
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["meta"]["role"] == "teacher" and ckpt["meta"]["temporal_offsets"] == [-2]
    for key in ("optimizer", "scheduler", "scaler", "rng", "loop", "train_config"):
        assert key in ckpt
    best_miou = ckpt["loop"]["best_miou"]
    assert ckpt["loop"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 1, "best_miou": best_miou}
    assert 0 <= best_miou <= 1
    assert (out / "best.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert {"train/loss", "train/loss_ce_3d", "lr/lr", "val/miou", "val/completion_iou"} <= set(events.Tags()["scalars"])
    assert "val/prediction_vs_ground_truth" in events.Tags()["images"]


@SHARES_TEACHER
def test_student_with_online_teacher_loads_in_predictor(teacher_run, synthetic_bag, tmp_path):
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

    out = tmp_path / "student"
    cfg = load_train_config(
        BUILTIN_CONFIG_DIR / "student_tiny.yaml",
        student_overrides(synthetic_bag, out, teacher_run[0] / "last.pt", "max_steps=1"),
    )
    summary = run_training(cfg)
    assert {"loss_distill", "feature_distance", "loss_ce_3d", "loss_sem_2d"} <= set(summary.last_losses)
    model, _ = build_model_from_checkpoint(load_checkpoint(out / "last.pt"))
    assert type(model).__name__ == "MonoOccStudent"


@SHARES_TEACHER
def test_teacher_cache_round_trip_and_mismatch(teacher_run, synthetic_bag, tmp_path):
    from monoocc_ros.models.checkpoint import load_checkpoint, save_checkpoint
    from training.feature_cache import CacheMismatchError, TeacherFeatureCache

    teacher = teacher_run[0] / "last.pt"
    cache = tmp_path / "cache"
    cfg = load_train_config(
        BUILTIN_CONFIG_DIR / "student_tiny.yaml",
        student_overrides(synthetic_bag, tmp_path / "s", teacher, "data.max_train_frames=1", f"distill.cache_dir={cache}",
                          "distill.source=cached"),
    )
    (folder,) = dump_teacher(cfg)
    settings = {"temporal_offsets": [-2], "image_scale": 0.125}
    opened = TeacherFeatureCache.open(folder, teacher_checkpoint=teacher, bags=[synthetic_bag], settings=settings)
    feats = opened.get(0, opened.manifest.stamps["0"])
    assert feats.dtype == torch.float16 and list(feats.shape) == opened.manifest.feature_shape

    # a different teacher checkpoint (one weight changed) must be refused, naming both
    other = tmp_path / "other_teacher.pt"
    ckpt = load_checkpoint(teacher)
    name = next(iter(ckpt["model"]))
    ckpt["model"][name] = ckpt["model"][name] + 1
    save_checkpoint(other, ckpt)
    bad = load_train_config(
        BUILTIN_CONFIG_DIR / "student_tiny.yaml",
        student_overrides(synthetic_bag, tmp_path / "s2", other, "data.max_train_frames=1", f"distill.cache_dir={cache}",
                          "distill.source=cached"),
    )
    with pytest.raises(TrainingError, match="sha256"):
        Trainer(bad, _single_env())
    with pytest.raises(CacheMismatchError, match="bags"):
        TeacherFeatureCache.open(folder, teacher_checkpoint=teacher, bags=[synthetic_bag, synthetic_bag], settings=settings)
    with pytest.raises(CacheMismatchError, match="image_scale"):
        TeacherFeatureCache.open(folder, teacher_checkpoint=teacher, bags=[synthetic_bag], settings={**settings, "image_scale": 1.0})
    # and the cached features drive a real student step
    summary = run_training(
        load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml",
                          student_overrides(synthetic_bag, tmp_path / "s3", teacher, "data.max_train_frames=1",
                                            f"distill.cache_dir={cache}", "distill.source=cached", "max_steps=1"))
    )
    assert "loss_distill" in summary.last_losses


def _single_env():
    from training.ddp import DistEnv

    return DistEnv()


def test_validation_labels_are_the_predictors(synthetic_bag, tmp_path):
    """Validation scores what the deployed checkpoint predicts: the Predictor's labels, voxel for voxel."""
    import numpy as np
    from torch.utils.data import default_collate

    from monoocc_ros.predictor import Predictor
    from training.validation import predict_batch

    cfg = load_train_config(
        BUILTIN_CONFIG_DIR / "student_tiny.yaml", student_overrides(synthetic_bag, tmp_path / "o", None, "data.max_train_frames=1")
    )
    trainer = Trainer(cfg, _single_env())
    sample = trainer.train_set[0]
    image_u8 = (sample["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    sample["image"] = torch.from_numpy(image_u8).permute(2, 0, 1).float() / 255  # what the Predictor feeds
    model = trainer.model.eval()
    with torch.no_grad():
        labels, _ = predict_batch(model, default_collate([sample]), "student")
    expected = Predictor(model).predict(image_u8, sample["K"].double().numpy(), sample["T_cam_grid"].double().numpy())
    np.testing.assert_array_equal(labels[0].numpy(), expected.labels)


def test_missing_bag_and_bag_without_ground_truth(synthetic_kitti, tmp_path):
    from monoocc_ros.data.converter import convert_sequence

    cfg = load_train_config(
        BUILTIN_CONFIG_DIR / "student_tiny.yaml", student_overrides(tmp_path / "nope", tmp_path / "o", None)
    )
    with pytest.raises(TrainingError, match=r"data.train_bags\[0\]: bag .*nope not found"):
        Trainer(cfg, _single_env())
    no_gt = tmp_path / "no_gt"
    convert_sequence(synthetic_kitti, "00", no_gt, frames=range(1, 3), progress=False)  # labels exist every 5th frame
    cfg = load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml", student_overrides(no_gt, tmp_path / "o", None))
    with pytest.raises(TrainingError, match="no ground-truth frames"):
        Trainer(cfg, _single_env())


def test_nan_loss_stops_and_keeps_last_checkpoint(synthetic_bag, tmp_path):
    import dataclasses

    out = tmp_path / "nan"
    cfg = load_train_config(
        BUILTIN_CONFIG_DIR / "student_tiny.yaml",
        student_overrides(synthetic_bag, out, None, "max_steps=1", "checkpoint_every=1"),
    )
    trainer = Trainer(cfg, _single_env())
    trainer.run()
    good = (out / "last.pt").read_bytes()
    with torch.no_grad():
        next(p for p in trainer.model.parameters() if p.requires_grad).fill_(float("nan"))
    trainer.cfg = dataclasses.replace(cfg, max_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at global step 2 .*=nan"):
        trainer.run()
    assert (out / "last.pt").read_bytes() == good


@pytest.mark.slow
def test_resume_after_sigkill_repeats_losses(synthetic_bag, tmp_path, capfd):
    # 2 frames x 2 epochs, stopped after 3 steps: the resumed part crosses an epoch boundary
    extra = ["data.max_train_frames=2", "checkpoint_every=1", "epochs=2", "max_steps=3"]
    ref = tmp_path / "ref"
    run_training(
        load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml", student_overrides(synthetic_bag, ref, None, *extra))
    )
    reference = read_losses(ref)
    assert sorted(reference) == [1, 2, 3]

    out = tmp_path / "killed"
    # The run holds still after its first checkpoint until killed: where it stops must not
    # depend on how fast the machine steps while the test polls for last.pt.
    hold_after_first_checkpoint = (
        "import sys, time\n"
        "import training.trainer as trainer\n"
        "from training.__main__ import main\n"
        "save = trainer.save_training_state\n"
        "def save_then_hold(*args, **kwargs):\n"
        "    save(*args, **kwargs)\n"
        "    time.sleep(3600)\n"
        "trainer.save_training_state = save_then_hold\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cfg_file = str(BUILTIN_CONFIG_DIR / "student_tiny.yaml")
    cmd = [sys.executable, "-c", hold_after_first_checkpoint, "train", "student", cfg_file]
    for item in student_overrides(synthetic_bag, out, None, *extra):
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if (out / "last.pt").is_file():  # step 1 is done and checkpointed: kill mid-epoch
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = max(read_losses(out))
    assert killed_at < 3
    # the same command with --resume, run in this process: the RNG state must come from the
    # checkpoint, since this process has trained before
    from training.__main__ import main

    assert main(cmd[3:] + ["--resume"]) == 0
    assert "resumed" in capfd.readouterr().err
    got = read_losses(out)
    assert sorted(got) == [1, 2, 3]
    for step, values in got.items():
        for value in values:  # steps logged before the kill and again after resuming must agree too
            assert value == pytest.approx(reference[step][0], rel=1e-6, abs=1e-7), (step, values, reference[step])


@SHARES_TEACHER
@pytest.mark.slow
def test_torchrun_two_ranks_agree(teacher_run, synthetic_bag, tmp_path):
    teacher_out, teacher_hashes = teacher_run
    student_hashes = tmp_path / "hashes"
    items = student_overrides(synthetic_bag, tmp_path / "student", teacher_out / "last.pt", "data.max_train_frames=2")
    torchrun_train("student", "student_tiny.yaml", items, student_hashes)
    for role, hash_dir in (("teacher", teacher_hashes), ("student", student_hashes)):
        ranks = rank_hashes(hash_dir)
        assert ranks[0]["step"] == ranks[1]["step"] == 1  # 2 frames over 2 ranks: one step each
        assert ranks[0]["sha256"] == ranks[1]["sha256"], role
    # the logged losses are the mean over ranks, not rank 0's own: each rank stepped on another frame
    for out, hash_dir in ((teacher_out, teacher_hashes), (tmp_path / "student", student_hashes)):
        logged = json.loads((out / LOSS_LOG).read_text().splitlines()[0])
        local = [rank["local_losses"] for rank in rank_hashes(hash_dir)]
        assert local[0]["loss"] != pytest.approx(local[1]["loss"], rel=1e-4), local
        for key in local[0]:
            assert logged[key] == pytest.approx((local[0][key] + local[1][key]) / 2, rel=1e-6), (out, key, logged, local)
    # only rank 0 writes: one log line per step, not one per rank
    assert len((tmp_path / "student" / LOSS_LOG).read_text().splitlines()) == 1
    assert len((teacher_out / LOSS_LOG).read_text().splitlines()) == 1


@SHARES_TEACHER
@pytest.mark.slow
def test_distillation_reduces_feature_distance(teacher_run, synthetic_bag, tmp_path):
    """The distilled student moves towards the teacher; val mIoU with and without is reported."""
    teacher = teacher_run[0] / "last.pt"
    common = [
        "data.max_train_frames=1",
        f"data.val_bags={synthetic_bag}",
        "data.max_val_frames=1",
        "validate=true",
        "epochs=2",
        "val_every=2",
        "optim.lr=2e-3",
        "optim.warmup_iters=0",
        "seed=3",
    ]
    results = {}
    for mode in ("mse", "off"):
        out = tmp_path / mode
        # with mode=off the teacher is still loaded, only to measure the same distance
        items = student_overrides(synthetic_bag, out, teacher, *common, f"distill.mode={mode}")
        summary = run_training(load_train_config(BUILTIN_CONFIG_DIR / "student_tiny.yaml", items))
        distances = [json.loads(line)["feature_distance"] for line in (out / LOSS_LOG).read_text().splitlines()]
        results[mode] = (distances, summary.val[-1]["miou"], summary.val[-1]["feature_distance"])
    for mode, (distances, miou, val_distance) in results.items():
        print(
            f"[distillation] mode={mode}: train feature distance {distances[0]:.4f} -> {distances[-1]:.4f}, "
            f"val feature distance {val_distance:.4f}, val mIoU {100 * miou:.2f}"
        )
    distilled = results["mse"][0]
    assert distilled[-1] < distilled[0]
