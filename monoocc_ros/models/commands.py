"""Model subcommands.

``monoocc convert-checkpoint``: official MonoOcc-S release -> project checkpoint, or VoxFormer's
query proposal network -> proposal-network weights; both with a JSON report.
``monoocc export``: the student's inference path to ONNX (and a TensorRT engine ahead of time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    _register_convert(subparsers)
    _register_export(subparsers)


def _register_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert an official MonoOcc-S checkpoint (mmcv) into a monoocc_ros checkpoint",
        description="Maps every tensor of the official release to the project's modules, detects whether "
        "ICA and the 2D decoder were trained, and writes a JSON report of mapped, folded and unused keys.",
    )
    parser.add_argument("src", help="official checkpoint (.pth with 'meta' and 'state_dict')")
    parser.add_argument("dst", help="project checkpoint to write")
    parser.add_argument(
        "--kind",
        choices=("monoocc", "voxformer-qpn"),
        default="monoocc",
        help="monoocc: MonoOcc-S release -> student checkpoint; voxformer-qpn: VoxFormer LMSCNet_SS -> proposal-network weights",
    )
    parser.add_argument(
        "--proposal-mode",
        choices=("all", "external"),
        default="all",
        help='"all": every voxel is a query (runs anywhere); "external": VoxFormer .query files (official protocol)',
    )
    parser.add_argument(
        "--ica",
        choices=("on", "off"),  # weights.ICA_CHOICES; not imported here to keep --help fast
        default=None,
        help="run image-conditioned cross-attention (on) or not (off); needed only when the file's config text "
        "(look_ahead) and its ICA weights disagree. Evidence and choice go into the report",
    )
    parser.add_argument("--report", default=None, help="report path (default: DST with .report.json)")
    parser.set_defaults(func=_run)


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


def _register_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export the student's inference path to ONNX (and optionally a TensorRT engine)",
        description="Export the student's inference path (labels [+ confidence]) to ONNX for a fixed image size; "
        "optionally build a TensorRT engine from it ahead of time.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="project checkpoint to export")
    source.add_argument("--config", help="export a randomly initialised model of this config (benchmarks)")
    p.add_argument("--output", "-o", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--image-hw", type=_image_hw, default=(370, 1226), help="input image size HxW (default 370x1226)")
    p.add_argument("--confidence", action="store_true", help="also output per-voxel confidence")
    p.add_argument("--tensorrt", type=Path, default=None, help="also build this TensorRT engine (needs tensorrt)")
    p.add_argument("--fp32", action="store_true", help="TensorRT engine in fp32 instead of fp16")
    p.set_defaults(func=_run_export)


def _image_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must look like 370x1226 (HxW), got {text!r}") from exc
    return h, w


def _run_export(args: argparse.Namespace) -> int:
    import torch

    from monoocc_ros.export import build_tensorrt_engine, export_onnx
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from monoocc_ros.models.config import get_model_config
    from monoocc_ros.models.monoocc import MonoOccStudent

    if args.checkpoint is not None:
        ckpt = load_checkpoint(args.checkpoint)
        model, _ = build_model_from_checkpoint(ckpt)
        name = ckpt.get("config_name", "")
    else:
        name = args.config
        torch.manual_seed(0)
        model = MonoOccStudent(get_model_config(name))
    out = export_onnx(model, args.output, image_hw=args.image_hw, with_confidence=args.confidence, config_name=name)
    print(f"wrote {out}")
    if args.tensorrt is not None:
        engine = build_tensorrt_engine(out, args.tensorrt, fp16=not args.fp32)
        print(f"wrote {engine}")
    return 0
