"""Seconds per image of DDRM restoration (20 steps) with the full-size networks.

The networks are random-initialised (the published weights are not needed to
time them): the ADM-256 UNet (552.8 M parameters, plus the 54 M classifier for
``imagenet-cond``) or the CelebA-HQ DDPM UNet2DModel. Also reports the share of
the time spent in the DDRM maths itself (operators + sampler, timed with a
zero-cost network), i.e. how far the sampler is from being network-bound.

    python bench/ddrm_restore.py --device cuda                      # full size, GPU
    python bench/ddrm_restore.py --device cuda --config imagenet-cond --deg color
    python bench/ddrm_restore.py --size 64 --tiny                   # CPU smoke run

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from runtime.ddrm.classifier import EncoderUNetModel
from runtime.ddrm.configs import CONFIGS, adm_config_from_flags, classifier_config_from_flags
from runtime.ddrm.degradations import make_operator
from runtime.ddrm.restore import pick_device
from runtime.ddrm.sampler import NoiseSchedule, classifier_guided, ddrm_sample
from runtime.ddrm.unet import UNetModel

TINY = {"num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2", "attention_resolutions": "16",
        "num_head_channels": 16}
TINY_CLASSIFIER = {"classifier_width": 32, "classifier_depth": 1, "channel_mult": "1,2,2",
                   "classifier_attention_resolutions": "16"}
# google/ddpm-celebahq-256 config.json
CELEBA_UNET = dict(
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, attention_head_dim=None,
)


def build_eps_fn(config: str, size: int, tiny: bool, device: torch.device, half: bool, batch: int):
    cfg = CONFIGS[config]
    if cfg.network == "diffusers":
        from diffusers import UNet2DModel

        from runtime.ddrm.ddpm import DiffusersEps

        kwargs = dict(CELEBA_UNET, sample_size=size)
        if tiny:
            kwargs.update(block_out_channels=(32, 64), layers_per_block=1,
                          down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        with torch.device(device):
            model = DiffusersEps(UNet2DModel(**kwargs)).eval()
        if half:
            model.half()
        return model, sum(p.numel() for p in model.parameters())

    flags = {**cfg.model_flags, "image_size": size, **(TINY if tiny else {})}
    with torch.device(device):
        unet = UNetModel(adm_config_from_flags(flags)).eval()
    params = sum(p.numel() for p in unet.parameters())
    if half:
        unet.convert_to_fp16()
    if not cfg.classifier_artifact:
        return unet, params
    cflags = {**cfg.classifier_flags, "image_size": size, **(TINY_CLASSIFIER if tiny else {})}
    with torch.device(device):
        classifier = EncoderUNetModel(classifier_config_from_flags(cflags)).eval()
    params += sum(p.numel() for p in classifier.parameters())
    if half:
        classifier.convert_to_fp16()
    labels = torch.arange(batch, device=device) % 1000
    return classifier_guided(unet, classifier, labels, schedule=NoiseSchedule.linear()), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="imagenet-uncond", choices=sorted(CONFIGS))
    parser.add_argument("--deg", default="sr4")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="a small network (for a CPU smoke run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4, help="images per sampler call")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches after one warm-up batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                        help="fp16 torso (default: on for CUDA)")
    args = parser.parse_args()

    device = pick_device(args.device)
    half = device.type == "cuda" if args.half is None else args.half
    eps_fn, params = build_eps_fn(args.config, args.size, args.tiny, device, half, args.batch)
    op = make_operator(args.deg, image_size=args.size, device=device)
    x = F.avg_pool2d(torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1, 5, 1, 2)
    y = op.H(x) + 0.1 * torch.randn(args.batch, op.singulars.numel(), device=device)
    schedule = NoiseSchedule.linear()

    def run(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            out = ddrm_sample(fn, op, y, schedule=schedule, sigma_0=0.1, steps=args.steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert torch.isfinite(out).all()
        return time.perf_counter() - start

    run(eps_fn)  # warm-up: kernels, allocator
    total = min(run(eps_fn) for _ in range(args.repeats))
    maths = min(run(lambda xt, t: torch.zeros_like(xt)) for _ in range(args.repeats))
    print(json.dumps({
        "config": args.config, "deg": args.deg, "size": args.size, "tiny": args.tiny, "steps": args.steps,
        "batch": args.batch, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "half": half, "parameters_M": round(params / 1e6, 1),
        "seconds_per_image": round(total / args.batch, 4),
        "ddrm_maths_share": round(maths / total, 4),
    }))


if __name__ == "__main__":
    main()
