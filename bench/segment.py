"""Training throughput of ``flood train --task segment`` against a bare PyTorch loop.

Both train the same U-Net on the same synthetic Sen1Floods11 download (the exact
layout, GeoTIFF chips read from disk every epoch, random crops and flips), with the
same batch size and precision. Ours is the real command path (``segment.train``:
the shared training core with its scheduler, clipping, checkpoints, validation and
curves); the peer is the loop a user writes by hand: forward, masked BCE, backward,
step, nothing else. Throughput is training chips per second of the training epochs
only (validation and checkpoint writing are not counted for ours either: the core
times the epoch's batches). Rounds alternate; medians are reported.

    python -m bench.segment --scale quick            # 64 px chips, CPU, ~1 minute
    python -m bench.segment --scale full --device cuda --precision auto   # 512 px, as Sen1Floods11
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from bench.common import bench_parser, emit_json, machine, remove, scratch_dir, table, verdict

SCALES = {"quick": dict(size=64, per_event=8, crop=64, batch=8, epochs=2),
          "full": dict(size=512, per_event=40, crop=256, batch=16, epochs=2)}
#: ours over the bare loop: the core's extras should cost little per chip
TARGET = 0.9


def _ours(download: Path, work: Path, cfg: dict, device: str, precision: str) -> tuple[float, str]:
    from runtime.vision.segment import SegmentConfig, train

    out = work / "ours"
    summary = train(SegmentConfig(data=download, out=out, crop=cfg["crop"], epochs=cfg["epochs"],
                                  batch_size=cfg["batch"], device=device, precision=precision,
                                  progress=False, workers=0))
    from runtime.train.checkpoint import read_checkpoint

    history = read_checkpoint(out / "last.pt")["history"]
    remove(out)
    return statistics.median(row["samples_per_s"] for row in history), summary["precision"]


def _bare(download: Path, cfg: dict, device: str, precision: str) -> float:
    import torch
    from torch.utils.data import DataLoader

    from runtime.train.precision import choose_device, choose_precision
    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.segment import build_segmenter, pixel_loss
    from runtime.vision.unet import DEFAULT_WIDTHS

    dev = choose_device(device)
    policy = choose_precision(dev, precision)
    data = s1f.load(download)
    mean, std = s1f.band_statistics(data.splits["train"], "s1")
    chips = s1f.ChipSet(data.splits["train"], "s1", mean, std, crop=cfg["crop"], augment=True)
    loader = DataLoader(chips, batch_size=cfg["batch"], shuffle=True, drop_last=True)
    model = build_segmenter(2, DEFAULT_WIDTHS).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rates = []
    for _ in range(cfg["epochs"]):
        model.train()
        seen, started = 0, time.perf_counter()
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            with policy.autocast():
                loss = pixel_loss(model(x), y)
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            if policy.scaler is not None:
                policy.scaler.scale(loss).backward()
                policy.scaler.step(optimizer)
                policy.scaler.update()
            else:
                loss.backward()
                optimizer.step()
            seen += len(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.segment", __doc__)
    parser.add_argument("--scale", default="quick", choices=tuple(SCALES))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.synthetic_sen1floods11 import make_sen1floods11

    cfg = SCALES[args.scale]
    work = scratch_dir("segment")
    try:
        download = make_sen1floods11(work / "download", size=cfg["size"], per_event=cfg["per_event"])
        ours, bare, precision = [], [], ""
        for i in range(args.rounds):
            rate, precision = _ours(download, work, cfg, args.device, args.precision)
            ours.append(rate)
            bare.append(_bare(download, cfg, args.device, args.precision))
            print(f"  round {i + 1}/{args.rounds}: ours {ours[-1]:.1f} chips/s, bare {bare[-1]:.1f} "
                  f"chips/s ({precision})", file=sys.stderr)
    finally:
        remove(work)
    ratio = statistics.median(ours) / statistics.median(bare)
    result = {"benchmark": "segment", "scale": args.scale, "chip_size": cfg["size"],
              "crop": cfg["crop"], "batch": cfg["batch"], "precision": precision,
              "ours_chips_per_s": statistics.median(ours), "bare_chips_per_s": statistics.median(bare),
              "ratio": ratio, "machine": machine()}
    if args.json:
        emit_json(result)
        return
    print(f"\nsegment training, {cfg['size']} px chips cropped to {cfg['crop']}, batch {cfg['batch']}, "
          f"{precision}; medians of {args.rounds} rounds; {machine()}\n")
    print(table(["loop", "chips/s"], [["flood train --task segment", f"{statistics.median(ours):.1f}"],
                                      ["bare PyTorch loop", f"{statistics.median(bare):.1f}"]]))
    print()
    print(table(["measure", "ratio", "target", ""],
                [["ours vs bare loop", f"{ratio:.2f}x", f">= {TARGET}x", verdict(ratio, TARGET, higher_is_better=True)]]))


if __name__ == "__main__":
    main()
