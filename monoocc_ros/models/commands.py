"""The handlers of the model subcommands (parsers: :mod:`monoocc_ros.cli.models`).

``monoocc convert-checkpoint``: official MonoOcc-S release -> project checkpoint, or VoxFormer's
query proposal network -> proposal-network weights; both with a JSON report.
``monoocc export``: the student's dense stages compiled ahead of time (ONNX, TensorRT, AOTInductor), by
default into the cache next to the checkpoint that the node reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from monoocc_ros.models.weights import convert_official_checkpoint, convert_voxformer_qpn

    report_path = Path(args.report) if args.report else None
    try:
        if args.kind == "voxformer-qpn":
            report = convert_voxformer_qpn(Path(args.src), Path(args.dst), report_path)
            print(f"wrote {args.dst}: {len(report.mapped)} tensors mapped, unused: {report.unused}")
            return 0
        report = convert_official_checkpoint(
            Path(args.src), Path(args.dst), report_path, proposal_mode=args.proposal_mode, ica=args.ica
        )
    except (OSError, ValueError) as err:
        print(f"monoocc convert-checkpoint: error: {err}", file=sys.stderr)
        return 2
    ica = report.ica
    print(
        f"wrote {args.dst}: {len(report.mapped)} tensors mapped, {len(report.folded)} value biases folded, "
        f"{len(report.unused)} unused; ICA {'on' if ica['use_ica'] else 'off'} ({ica['decided_by']}; weights "
        f"{'trained' if ica['weights_trained'] else 'untrained'}, config look_ahead={ica['config_look_ahead']}), "
        f"2D decoder {'present' if report.sem_decoder_present else 'absent'}; flags in config: {report.flags_from_config}"
    )
    return 0


def _run_export(args: argparse.Namespace) -> int:
    """Build one backend's artefact; with a checkpoint and no --output, into the cache the node reads."""
    import time

    import torch

    from monoocc_ros.export import build_tensorrt_engine, export_onnx, is_current
    from monoocc_ros.inference import BackendError, backend_artefact, check_backend_options, export_backend
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    def fail(text: str) -> int:
        print(f"monoocc export: error: {text}", file=sys.stderr)
        return 2

    if args.checkpoint is None and args.output is None:
        return fail("--config exports a random model: give --output (the cache is keyed by a checkpoint's hash)")
    if args.tensorrt is not None and args.backend != "onnxruntime":
        return fail("--tensorrt PATH builds an engine from the ONNX export; use --backend tensorrt instead")
    device = "cuda" if args.backend == "tensorrt" else "cpu"
    try:
        check_backend_options(args.backend, device, args.precision)
    except (ValueError, BackendError) as err:
        return fail(str(err))
    # a missing or corrupt checkpoint is one line from monoocc_ros.cli.main
    if args.checkpoint is not None:
        ckpt = load_checkpoint(args.checkpoint)
        model, _ = build_model_from_checkpoint(ckpt)
        name = ckpt.get("config_name", "")
    else:
        name = args.config
        torch.manual_seed(0)
        model = MonoOccStudent(get_model_config(name))
    model.eval()
    if args.backend == "onnxruntime" and args.output is not None:
        out = export_onnx(model, args.output, image_hw=args.image_hw, with_confidence=args.confidence, config_name=name)
    else:
        target = args.output or backend_artefact(args.backend, args.checkpoint, args.image_hw, args.precision)
        if is_current(args.backend, target) and not args.force:
            print(f"{target} is current (same checkpoint bytes, image size and precision); --force builds it again")
            return 0
        start = time.perf_counter()
        out = export_backend(args.backend, model, checkpoint_path=args.checkpoint, image_hw=args.image_hw,
                             precision=args.precision, config_name=name, output=args.output)
        print(f"built {args.backend} {args.precision} in {time.perf_counter() - start:.0f} s")
    print(f"wrote {out}")
    if args.tensorrt is not None:
        engine = build_tensorrt_engine(out, args.tensorrt, fp16=not args.fp32)
        print(f"wrote {engine}")
    return 0
