"""``monoocc convert-checkpoint``: official MonoOcc-S release -> project checkpoint, or VoxFormer's
query proposal network -> proposal-network weights; both with a JSON report."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
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
    parser.add_argument("--report", default=None, help="report path (default: DST with .report.json)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from monoocc_ros.models.weights import convert_official_checkpoint, convert_voxformer_qpn

    if args.kind == "voxformer-qpn":
        report = convert_voxformer_qpn(Path(args.src), Path(args.dst), Path(args.report) if args.report else None)
        print(f"wrote {args.dst}: {len(report.mapped)} tensors mapped, unused: {report.unused}")
        return 0
    report = convert_official_checkpoint(
        Path(args.src), Path(args.dst), Path(args.report) if args.report else None, proposal_mode=args.proposal_mode
    )
    print(
        f"wrote {args.dst}: {len(report.mapped)} tensors mapped, {len(report.folded)} value biases folded, "
        f"{len(report.unused)} unused; ICA {'on' if report.ica_trained else 'off (never trained)'}, "
        f"2D decoder {'present' if report.sem_decoder_present else 'absent'}; flags in config: {report.flags_from_config}"
    )
    return 0
