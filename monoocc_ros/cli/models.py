"""``monoocc convert-checkpoint`` and ``monoocc export``: the parsers of the model jobs.

``convert-checkpoint``: official MonoOcc-S release -> project checkpoint, or VoxFormer's query
proposal network -> proposal-network weights; both with a JSON report. ``export``: the student's
inference path to ONNX (and a TensorRT engine ahead of time). Handlers:
:mod:`monoocc_ros.models.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monoocc_ros.cli.handlers import Handler

__all__ = ["image_hw", "register"]


def register(subparsers) -> None:
    """Add ``convert-checkpoint`` and ``export``."""
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
    parser.set_defaults(func=Handler("monoocc_ros.models.commands:_run"))


def _register_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="compile the student's dense stages ahead of time (ONNX, TensorRT engine or AOTInductor package)",
        description="Compile the student's fixed-shape stages (trunk + neck, query proposal network) for one image "
        "size; the node and `monoocc eval --backend` run the rest of the model's own path around them. Without "
        "--output the artefact goes next to the checkpoint, named by its hash, and is rebuilt only when stale.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="project checkpoint to export")
    source.add_argument("--config", help="export a randomly initialised model of this config (benchmarks)")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="file to write (required with --config; default: the cache next to the checkpoint that the "
                   "node and `monoocc eval --backend` read)")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt", "aotinductor"), default="onnxruntime",
                   help="which ahead-of-time artefact to build (aotinductor: C++ compiled for this CPU, minutes)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="precision of the compiled stages (aotinductor: fp32 or bf16 on CPU; tensorrt: fp16 or fp32)")
    p.add_argument("--force", action="store_true", help="build again even when the cached artefact is current")
    p.add_argument("--image-hw", type=image_hw, default=(370, 1226), help="input image size HxW (default 370x1226)")
    p.add_argument("--confidence", action="store_true", help="also output per-voxel confidence")
    p.add_argument("--tensorrt", type=Path, default=None, help="also build this TensorRT engine (needs tensorrt)")
    p.add_argument("--fp32", action="store_true", help="TensorRT engine in fp32 instead of fp16")
    p.set_defaults(func=Handler("monoocc_ros.models.commands:_run_export"))


def image_hw(text: str) -> tuple[int, int]:
    """``"370x1226"`` -> (370, 1226)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must look like 370x1226 (HxW), got {text!r}") from exc
    return h, w
