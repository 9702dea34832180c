"""Distillation throughput: training images per second for KD and DisWOT+ on synthetic CIFAR data.

Runs the real training loop (:func:`diswot.distill.distill`) - on-device uint8 data, batched
augmentation, teacher forward, student forward/backward, loss, SGD step - with a ResNet56 teacher and
a ResNet20 student on a synthetic CIFAR-shaped set, and reports the images/s of the *last* epoch (the
first one pays for cuDNN autotuning and allocator warm-up). It also times the data pipeline alone,
so one can see that loading is not the bottleneck.

GPU (default setting)::

    python benchmarks/distill_throughput.py --json

CPU smoke run (tiny nets and data)::

    python benchmarks/distill_throughput.py --tiny --device cpu --json

The teacher is randomly initialised: throughput does not depend on its weights. The last stdout line
is one JSON object when ``--json`` is given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from diswot.distill import BatchLoader, distill, make_synthetic
from diswot.runtime import resolve_device


def loader_throughput(images: int, batch_size: int, device: torch.device, epochs: int = 2) -> float:
    """Images/s of the data pipeline alone (index, crop, flip, normalise), last of ``epochs``."""
    data = make_synthetic(images, 100, seed=0)
    loader = BatchLoader(data, batch_size, device, train=True, channels_last=device.type == "cuda")
    rate = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = 0
        for x, _ in loader:
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rate = n / (time.perf_counter() - t0)
    return rate


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--student", default="resnet20")
    p.add_argument("--methods", nargs="+", default=["kd", "diswot+"])
    p.add_argument("--images", type=int, default=25000, help="synthetic training images")
    p.add_argument("--batch-size", type=int, default=64, help="the paper's 64 by default")
    p.add_argument("--epochs", type=int, default=2, help="epochs per method; the last is timed")
    p.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"))
    p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument(
        "--tiny", action="store_true", help="CPU smoke setting: resnet14->resnet8, 256 images"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    args = p.parse_args(argv)
    if args.tiny:
        args.teacher, args.student, args.images, args.batch_size = "resnet14", "resnet8", 256, 32
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    report: dict = {
        "device": name,
        "teacher": args.teacher,
        "student": args.student,
        "images": args.images,
        "batch_size": args.batch_size,
        "amp": args.amp,
        "torch": torch.__version__,
        "loader_images_per_s": round(loader_throughput(args.images, args.batch_size, dev), 1),
        "methods": {},
    }
    print(f"device {name}; data pipeline alone: {report['loader_images_per_s']:.0f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            t0 = time.perf_counter()
            res = distill(
                args.teacher,
                None,
                args.student,
                method,
                "synthetic",
                out=Path(tmp) / method.replace("+", "plus"),
                epochs=args.epochs,
                batch_size=args.batch_size,
                synthetic_train=args.images,
                synthetic_test=min(1000, args.images),
                synthetic_classes=100,
                amp=args.amp,
                channels_last=args.channels_last,
                device=str(dev),
                progress=False,
            )
            last = res["history"][-1]
            report["methods"][method] = {
                "images_per_s": last["train_images_per_s"],
                "epoch_time_s": last["epoch_time_s"],
                "wall_s": round(time.perf_counter() - t0, 2),
                "final_train_loss": round(last["train_loss"], 4),
            }
            print(
                f"{method:8s} {args.teacher}->{args.student}: {last['train_images_per_s']:.0f} img/s "
                f"(epoch {last['epoch_time_s']:.2f} s incl. eval)"
            )
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
