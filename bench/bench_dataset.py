"""Bag dataset throughput: samples/s through a ``DataLoader`` (default 2 workers). Prints JSON.

Without ``--bag`` a short generated sequence (every frame with voxels) is converted to a
temporary MCAP bag first; that setup is not timed.

    python bench/bench_dataset.py [--bag BAG] [--workers 2] [--batch-size 1] [--epochs 2]
                                  [--temporal-offsets -1 1] [--frames 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _make_bag(tmp: Path, num_frames: int) -> Path:
    from monoocc_ros.data.converter import convert_sequence
    from monoocc_ros.data.scene import SceneConfig, generate_sequence

    generate_sequence(
        tmp / "kitti", SceneConfig(num_frames=num_frames, voxel_every=1), sequence="00"
    )
    bag = tmp / "bag"
    convert_sequence(tmp / "kitti", "00", bag)
    return bag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bag", type=Path, default=None, help="bag to read (default: generate one)"
    )
    parser.add_argument("--frames", type=int, default=10, help="frames of the generated sequence")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--epochs", type=int, default=2, help="passes over the dataset (first one warms up)"
    )
    parser.add_argument("--temporal-offsets", type=int, nargs="*", default=[])
    parser.add_argument("--quick", action="store_true", help="CI size (monoocc bench --quick): 3 frames")
    args = parser.parse_args()
    if args.quick:
        args.frames = 3

    import torch
    from torch.utils.data import DataLoader

    from monoocc_ros.data.bag_dataset import BagDataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bag = args.bag or _make_bag(Path(tmp), args.frames)
        t0 = time.perf_counter()
        dataset = BagDataset([bag], temporal_offsets=args.temporal_offsets)
        index_s = time.perf_counter() - t0
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        per_epoch = []
        for _ in range(max(args.epochs, 1)):
            t0 = time.perf_counter()
            n = sum(batch["image"].shape[0] for batch in loader)
            per_epoch.append(n / (time.perf_counter() - t0))
        sample = dataset[0]
    print(
        json.dumps(
            {
                "bench": "bag_dataset",
                "samples": len(dataset),
                "image_hw": list(sample["image"].shape[1:]),
                "workers": args.workers,
                "batch_size": args.batch_size,
                "temporal_offsets": args.temporal_offsets,
                "index_s": round(index_s, 3),
                "samples_per_s_first_epoch": round(per_epoch[0], 2),
                "samples_per_s": round(per_epoch[-1], 2),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
