"""`ddrm`: restore degraded images with DDRM, offline, from bundled diffusion checkpoints.

Three configurations (DDRM's published ones): ``celeba`` (CelebA-HQ DDPM,
diffusers port ``google/ddpm-celebahq-256``), ``imagenet-uncond`` (OpenAI
``256x256_diffusion_uncond.pt``) and ``imagenet-cond`` (OpenAI
``256x256_diffusion.pt`` + ``256x256_classifier.pt`` guidance).

Examples::

    bundle run ddrm restore --config celeba --deg sr4 --images faces/ --out out/sr4
    bundle run ddrm restore --config imagenet-uncond --deg deblur_gauss --sigma-0 0 --images imgs/ --out out/blur
    bundle run ddrm restore --config imagenet-cond --deg inp --class-label 207 --images dogs/ --out out/inp
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.data.badfiles import SKIP_OPTION
from runtime.ddrm.configs import ADM_CLASSIFIER, ADM_COND, ADM_UNCOND, CELEBA_DDPM
from runtime.stacks.record import Need, register_stack
from runtime.train.options import IN_FILE, OUT_FILE, OUT_FOLDER, device_option, one_line_errors

STACK = "ddrm"

#: What each --config loads from the bundle, by ref (the URL or Hub repo; bundles/ddrm.toml
#: names them adm-256-uncond, adm-256-cond, adm-256-classifier, ddpm-celebahq-256).
#: --model-artifact / --classifier-artifact name other artifacts, or files on disk. Every
#: run picks one --config, so for `bundle doctor` one complete configuration is enough.
NEEDS = (
    Need("celeba model", (CELEBA_DDPM,), ("restore",), when={"config": ("celeba",)},
         option="model_artifact", default=False),
    Need("imagenet-uncond model", (ADM_UNCOND,), ("restore",), when={"config": ("imagenet-uncond",)},
         option="model_artifact", default=False),
    Need("imagenet-cond model", (ADM_COND,), ("restore",), when={"config": ("imagenet-cond",)},
         option="model_artifact", default=False),
    Need("imagenet-cond classifier", (ADM_CLASSIFIER,), ("restore",),
         when={"config": ("imagenet-cond",)}, option="classifier_artifact", default=False),
)

CONFIG_NAMES = ("celeba", "imagenet-uncond", "imagenet-cond")
#: --deg forms (N: any factor the size allows); the operator module checks the rest
DEG_HELP = ("Degradation: srN (N×N block-average SR: sr2, sr4, sr8, ...), sr_bicubicN, "
            "deblur_uni (9x9), deblur_gauss, deblur_aniso, csN (Walsh-Hadamard compressed "
            "sensing, 1/N of the coefficients), inp (half the pixels or --mask), inp_lolcat, "
            "inp_lorem (DDRM's masks), color, deno.")


def _deg(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    if value in ("deblur_uni", "deblur_gauss", "deblur_aniso", "inp", "inp_lolcat", "inp_lorem",
                 "color", "deno") or re.fullmatch(r"(sr|sr_bicubic|cs)[1-9][0-9]*", value):
        return value
    raise click.BadParameter(f"{value!r} is not a degradation. {DEG_HELP}")


@register_stack(STACK, summary="DDRM image restoration from bundled diffusion checkpoints",
                needs=NEEDS, one_of_optional=True, docs="docs/ddrm.md")
@click.group(STACK, help=__doc__)
def cli() -> None:
    pass


@cli.command("restore")
@click.option("--config", "config", type=click.Choice(CONFIG_NAMES), required=True,
              help="Which published model.")
@click.option("--deg", required=True, callback=_deg, help=DEG_HELP)
@click.option("--images", type=OUT_FOLDER, required=True,
              help="Folder of clean images (ground truth); each is centre-cropped and resized.")
@click.option("--out", type=OUT_FOLDER, required=True,
              help="Folder for orig_/degraded_/restored_ PNGs and metrics.csv.")
@click.option("--sigma-0", "sigma_0", type=float, default=0.05, show_default=True,
              help="Std of the noise added to y, in [0, 1] pixel units (DDRM's --sigma_0).")
@click.option("--steps", type=int, default=20, show_default=True, help="Network evaluations.")
@click.option("--eta", type=float, default=0.85, show_default=True, help="DDRM eta.")
@click.option("--eta-b", "eta_b", type=float, default=1.0, show_default=True, help="DDRM eta_b.")
@device_option(help="auto, cpu, cuda, cuda:1, mps …")
@click.option("--half/--no-half", default=None, help="fp16 network torso (default: on for CUDA).")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--class-label", type=int, default=None,
              help="imagenet-cond: ImageNet class id of every image.")
@click.option("--labels", "labels_csv", type=IN_FILE, help="imagenet-cond: CSV rows 'file,label'.")
@click.option("--mask", type=IN_FILE, help="inp: mask image, white = observed pixel.")
@click.option("--model-flags", default="",
              help="guided-diffusion MODEL_FLAGS overriding the config's " "architecture, e.g. '--num_channels 128 --image_size 64'.")
@click.option("--classifier-flags", default="",
              help="guided-diffusion CLASSIFIER_FLAGS overriding the classifier's.")
@click.option("--model-artifact", default=None,
              help="Artifact id or ref of other denoiser weights.")
@click.option("--classifier-artifact", default=None,
              help="Artifact id or ref of other classifier weights.")
@click.option(SKIP_OPTION, "skip_bad_files", is_flag=True,
              help="Leave out images that cannot be read (named in a warning) instead of "
                   "stopping; every image is read once before the networks load.")
@click.option("--reference-compat", "reference_compat", is_flag=True,
              help="Compute what DDRM's reference code computes, quirks included (to reproduce the " "paper's numbers; docs/ddrm.md lists the differences). Default: the correct algorithm.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the per-image metrics as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def restore_command(as_json: bool, quiet: bool, **options) -> None:
    """Degrade each image, restore it with DDRM, and report PSNR/SSIM.

    Writes OUT/orig_NAME.png, OUT/degraded_NAME.png, OUT/restored_NAME.png and
    OUT/metrics.csv (psnr, ssim of the restored and of the degraded picture,
    seconds per image; last row: means). Weights come from the attached bundles.

    --config celeba takes the diffusers port (google/ddpm-celebahq-256) or DDRM's own
    celeba_hq.ckpt (--model-artifact ARTIFACT_ID, or a path to the file).

    \b
    Examples:
      bundle run ddrm restore --config celeba --deg sr4 --images faces/ --out out/sr4
      bundle run ddrm restore --config celeba --model-artifact /kaggle/input/ddrm/celeba_hq.ckpt \\
          --deg deblur_gauss --sigma-0 0.1 --reference-compat --images faces/ --out out/blur
      bundle run ddrm restore --config imagenet-cond --deg color --class-label 1 \\
          --images goldfish/ --out out/color --steps 20 --device cuda
    """
    from runtime.ddrm.restore import RestoreRequest, restore

    request = RestoreRequest(progress=not quiet, **options)
    with one_line_errors():
        results = restore(request)
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps([asdict(r) for r in results], indent=1))
    else:
        mean_psnr = sum(r.psnr for r in results) / len(results)
        mean_ssim = sum(r.ssim for r in results) / len(results)
        click.echo(
            f"{len(results)} images restored: PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.4f} "
            f"-> {request.out / 'metrics.csv'}",
            file=sys.stdout,
        )


@cli.command("convert")
@click.argument("src", type=IN_FILE)
@click.argument("dst", type=OUT_FILE, required=False)
def convert_command(src: Path, dst: Path | None) -> None:
    """Convert a .pt checkpoint to .safetensors (loads without pickle, memory-mapped).

    A NAME.safetensors next to NAME.pt is used in its place by `restore`.

    \b
    Example:
      bundle run ddrm convert 256x256_diffusion_uncond.pt
    """
    from runtime.ddrm.checkpoints import convert_to_safetensors

    with one_line_errors():
        click.echo(str(convert_to_safetensors(src, dst)))


if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.ddrm [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.ddrm")
