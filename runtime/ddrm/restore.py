"""The restoration pipeline behind ``bundle run ddrm restore``: recipe order, top to bottom.

1. resolve the configuration's weights in the attached bundles and build the network;
2. read the images (centre crop, resize to the network's size, scale to [-1, 1]);
3. degrade them: y = H x + σ₀·n;
4. restore with DDRM (with classifier guidance for ``imagenet-cond``);
5. write ``orig_*.png``, ``degraded_*.png``, ``restored_*.png`` and ``metrics.csv``
   (PSNR and SSIM from torchmetrics, for the restored and the degraded picture).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from runtime.ddrm.checkpoints import build_and_load, load_state_dict
from runtime.ddrm.configs import (
    RestoreConfig,
    adm_config_from_flags,
    classifier_config_from_flags,
    get_config,
    parse_flags,
)
from runtime.ddrm.degradations import make_operator
from runtime.ddrm.sampler import EpsFn, NoiseSchedule, classifier_guided, ddrm_sample
from runtime.errors import RestoreError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CSV_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"


@dataclass
class RestoreRequest:
    """What ``bundle run ddrm restore`` was asked to do (see its --help for each field)."""

    config: str
    deg: str
    images: Path
    out: Path
    sigma_0: float = 0.05
    steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0
    device: str = "auto"
    seed: int = 0
    batch_size: int = 4
    half: bool | None = None
    model_flags: str = ""
    classifier_flags: str = ""
    model_artifact: str | None = None
    classifier_artifact: str | None = None
    class_label: int | None = None
    labels_csv: Path | None = None
    mask: Path | None = None
    progress: bool = True
    #: compute what DDRM's reference code computes (runtime.ddrm.reference)
    reference_compat: bool = False
    #: leave out images that cannot be read (named in a warning) instead of stopping
    skip_bad_files: bool = False


@dataclass
class ImageResult:
    """One row of metrics.csv."""

    image: str
    psnr: float
    ssim: float
    psnr_degraded: float
    ssim_degraded: float
    seconds: float


@dataclass
class Networks:
    """The loaded denoiser, ready for the sampler."""

    eps_fn: EpsFn | None
    schedule: NoiseSchedule
    image_size: int
    make_guided: Callable[[torch.Tensor], EpsFn] | None = field(default=None)
    #: {"model": record, "classifier": record}: what was loaded (runtime.provenance)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: class-conditional configs: (labels) -> (ε(x, t), scale·∇ log p(y | x, t)), apart
    make_parts: Callable[[torch.Tensor], tuple[EpsFn, EpsFn]] | None = field(default=None)


def pick_device(name: str) -> torch.device:
    """``auto`` → cuda, else mps, else cpu; anything else is passed to torch.device."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_networks(cfg: RestoreConfig, req: RestoreRequest, device: torch.device, half: bool) -> Networks:
    """Resolve the weights of ``cfg`` in the attached bundles and build its networks on ``device``."""
    import runtime

    model_id = req.model_artifact or cfg.model_artifact
    if req.model_artifact and Path(req.model_artifact).expanduser().exists():
        # A file of the user's own (a Kaggle dataset with celeba_hq.ckpt, say): used as it is,
        # its sha256 on record.
        from runtime.provenance import of_local

        model_path = Path(req.model_artifact).expanduser()
        origin: dict[str, Any] = {"model": of_local(model_path)}
        model_id = ""  # messages name the file, not an artifact
    else:
        resolved = runtime.resolve_with_provenance(model_id)
        model_path = resolved.path
        origin = {"model": resolved.provenance}
    if cfg.network == "diffusers" and model_path.is_file():
        # DDRM's own celeba_hq.ckpt (models/diffusion.py Model), recognised by its keys.
        from runtime.ddrm.ddrm_model import (
            DDPMModel,
            config_from_state_dict,
            is_ddpm_state_dict,
            strip_wrappers,
        )

        state = strip_wrappers(load_state_dict(model_path, artifact=model_id))
        if not is_ddpm_state_dict(state):
            raise RestoreError(
                f"--config {cfg.name}: {model_path} is a state dict, but not of DDRM's "
                "models/diffusion.py Model (no temb.dense / down.0.block keys; first keys: "
                f"{', '.join(list(state)[:3])}); pass DDRM's celeba_hq.ckpt or a diffusers "
                "UNet2DModel snapshot (google/ddpm-celebahq-256)"
            )
        arch = config_from_state_dict(state, resolution=cfg_image_size(cfg))
        model = build_and_load(lambda: DDPMModel(arch), state, artifact=model_id, path=model_path,
                               hint="DDRM's celeba_hq.yml network was expected").to(device)
        if half:
            model.half()
        schedule = NoiseSchedule.linear(cfg.beta_start, cfg.beta_end, cfg.num_timesteps)
        return Networks(eps_fn=model, schedule=schedule, image_size=arch.resolution,
                        provenance=origin)
    if cfg.network == "diffusers":
        from runtime.ddrm.ddpm import ddpm_schedule, load_ddpm

        model = load_ddpm(model_path).to(device)
        if half:
            model.half()
        size = int(model.unet.config.sample_size)
        return Networks(eps_fn=model, schedule=ddpm_schedule(model_path), image_size=size,
                        provenance=origin)

    from runtime.ddrm.classifier import EncoderUNetModel
    from runtime.ddrm.unet import UNetModel

    flags = {**cfg.model_flags, **parse_flags(req.model_flags)}
    arch = adm_config_from_flags(flags)
    hint = "if the file is a different ADM model, describe it with --model-flags (guided-diffusion's MODEL_FLAGS)"
    unet = build_and_load(lambda: UNetModel(arch), load_state_dict(model_path, artifact=model_id),
                          artifact=model_id, path=model_path, hint=hint).to(device)
    if half:
        unet.convert_to_fp16()
    schedule = NoiseSchedule.linear(cfg.beta_start, cfg.beta_end, cfg.num_timesteps)
    if arch.num_classes is None:
        return Networks(eps_fn=unet, schedule=schedule, image_size=arch.image_size,
                        provenance=origin)

    classifier_id = req.classifier_artifact or cfg.classifier_artifact
    if classifier_id is None:
        raise RestoreError(f"config {cfg.name!r} is class-conditional but names no classifier artifact")
    classifier_resolved = runtime.resolve_with_provenance(classifier_id)
    classifier_path = classifier_resolved.path
    origin["classifier"] = classifier_resolved.provenance
    cflags = {**cfg.classifier_flags, **parse_flags(req.classifier_flags)}
    carch = classifier_config_from_flags(cflags)
    classifier = build_and_load(
        lambda: EncoderUNetModel(carch), load_state_dict(classifier_path, artifact=classifier_id),
        artifact=classifier_id, path=classifier_path,
        hint="if the file is a different classifier, describe it with --classifier-flags",
    ).to(device)
    if half:
        classifier.convert_to_fp16()

    def make_guided(labels: torch.Tensor) -> EpsFn:
        return classifier_guided(unet, classifier, labels, schedule=schedule, scale=cfg.classifier_scale)

    def make_parts(labels: torch.Tensor) -> tuple[EpsFn, EpsFn]:
        from runtime.ddrm.sampler import log_prob_gradient

        return (lambda x, t: unet(x, t, labels),
                lambda x, t: cfg.classifier_scale * log_prob_gradient(classifier, x, t, labels))

    return Networks(eps_fn=None, schedule=schedule, image_size=arch.image_size,
                    make_guided=make_guided, provenance=origin, make_parts=make_parts)


def cfg_image_size(cfg: RestoreConfig) -> int:
    """The resolution of a configuration's network (DDRM's configs: 256 for all three)."""
    return int(cfg.model_flags.get("image_size", 256))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Raises:
        RestoreError: the folder is missing or holds no image.
    """
    if not folder.is_dir():
        raise RestoreError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise RestoreError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def readable_images(files: list[Path], *, skip_bad_files: bool) -> list[Path]:
    """``files`` after one full decode of each, before any network is loaded: an unreadable
    image stops the run with one line naming every one (nothing written), or with
    ``skip_bad_files`` is left out with a warning."""
    from runtime.vision.errors import DatasetError
    from runtime.vision.images import checked

    try:
        return checked(files, skip_bad_files=skip_bad_files, action="restore",
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    except DatasetError as exc:
        raise RestoreError(f"--images: {exc}") from None


def read_image(path: Path, size: int) -> torch.Tensor:
    """[3, size, size] in [-1, 1]: centre square crop, bicubic resize."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        if side != size:
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def save_image(x: torch.Tensor, path: Path) -> None:
    """Write a [3, S, S] tensor in [-1, 1] as an 8-bit PNG."""
    from PIL import Image

    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    Image.fromarray(arr.permute(1, 2, 0).numpy()).save(path)


def read_mask(path: Path, size: int) -> torch.Tensor:
    """[size, size] bool from a mask image: white (≥ 128) = observed pixel."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            grey = img.convert("L").resize((size, size), Image.Resampling.NEAREST)
            return torch.from_numpy(np.asarray(grey) >= 128)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "not readable"
        raise RestoreError(f"--mask {path} cannot be read as an image: {exc}") from None


def read_labels(req: RestoreRequest, files: list[Path]) -> list[int]:
    """Class ids for the class-conditional config: --class-label for all, or --labels CSV (file,label)."""
    if req.labels_csv is not None:
        table: dict[str, int] = {}
        with open(req.labels_csv, newline="") as fh:
            for row in csv.reader(fh):
                if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
                    table[row[0].strip()] = int(row[1])
        missing = [f.name for f in files if f.name not in table and f.stem not in table]
        if missing:
            raise RestoreError(f"--labels {req.labels_csv}: no label for {', '.join(missing[:5])}")
        return [table.get(f.name, table.get(f.stem, 0)) for f in files]
    if req.class_label is not None:
        return [req.class_label] * len(files)
    raise RestoreError(
        "the imagenet-cond config needs the ImageNet class of each image: "
        "pass --class-label N (same for all) or --labels FILE.csv (rows: file,label)"
    )


def _metrics(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    p = ((pred.float().cpu().clamp(-1, 1) + 1) / 2)[None]
    t = ((target.float().cpu() + 1) / 2)[None]
    return (
        float(peak_signal_noise_ratio(p, t, data_range=1.0)),
        float(structural_similarity_index_measure(p, t, data_range=1.0)),
    )


def restore(req: RestoreRequest) -> list[ImageResult]:
    """Run the whole recipe; returns one ``ImageResult`` per image (also written to metrics.csv).

    Raises:
        RestoreError: bad inputs or options.
        runtime.ArtifactNotFoundError: the bundle lacks the configuration's weights.
        runtime.ddrm.checkpoints.CheckpointError: the weights do not fit the network.
    """
    try:
        cfg = get_config(req.config)
    except KeyError as exc:
        raise RestoreError(str(exc.args[0])) from None
    if req.sigma_0 < 0:
        raise RestoreError("--sigma-0 must be >= 0")
    files = readable_images(list_images(req.images), skip_bad_files=req.skip_bad_files)
    device = pick_device(req.device)
    half = (device.type == "cuda") if req.half is None else req.half
    nets = load_networks(cfg, req, device, half)
    from runtime.provenance import lines

    for text in lines(nets.provenance):
        print(text, file=sys.stderr, flush=True)
    labels = read_labels(req, files) if nets.make_guided is not None else None
    if labels is not None and not all(0 <= label < 1000 for label in labels):
        raise RestoreError("class labels must be ImageNet ids 0…999 (--class-label / --labels)")
    size = nets.image_size
    mask = read_mask(req.mask, size) if req.mask is not None else None
    try:
        if req.reference_compat:
            operator = _reference_operator(req, size, device, mask)
        else:
            operator = make_operator(req.deg, image_size=size, device=device, mask=mask, seed=req.seed)
    except ValueError as exc:
        raise RestoreError(f"--deg {req.deg}: {exc}") from None

    req.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(req.seed)
    sigma_0 = 2 * req.sigma_0  # images live in [-1, 1]: twice the [0, 1] noise level
    results: list[ImageResult] = []
    batches = [files[i : i + req.batch_size] for i in range(0, len(files), req.batch_size)]
    for batch_index, batch in enumerate(batches):
        start = time.perf_counter()
        x = torch.stack([read_image(f, size) for f in batch]).to(device)
        y = operator.H(x)
        y = y + sigma_0 * torch.randn(y.shape, device=device, generator=generator)
        if nets.make_guided is not None:
            first = batch_index * req.batch_size
            eps_fn = nets.make_guided(torch.tensor(labels[first : first + len(batch)], device=device))
        else:
            eps_fn = nets.eps_fn
        if req.reference_compat:
            restored = _reference_restore(req, nets, operator, y, batch_index, labels, sigma_0,
                                          generator)
        else:
            with torch.no_grad():
                restored = ddrm_sample(
                    eps_fn, operator, y, schedule=nets.schedule, sigma_0=sigma_0, steps=req.steps,
                    eta=req.eta, eta_b=req.eta_b, generator=generator, progress=req.progress,
                )
        degraded = operator.observation_image(y)
        seconds = (time.perf_counter() - start) / len(batch)
        for i, f in enumerate(batch):
            stem = f.stem
            save_image(x[i], req.out / f"orig_{stem}.png")
            save_image(degraded[i], req.out / f"degraded_{stem}.png")
            save_image(restored[i], req.out / f"restored_{stem}.png")
            psnr, ssim = _metrics(restored[i], x[i])
            psnr_d, ssim_d = _metrics(degraded[i], x[i])
            results.append(ImageResult(f.name, psnr, ssim, psnr_d, ssim_d, seconds))
        if req.progress:
            print(f"[ddrm] {len(results)}/{len(files)} images, {seconds:.2f} s/image", file=sys.stderr)
    write_csv(results, req.out / CSV_NAME)
    write_summary(req, cfg, results, nets.provenance, req.out / SUMMARY_NAME)
    return results


def _reference_operator(req: RestoreRequest, size: int, device: torch.device,
                        mask: torch.Tensor | None) -> Any:
    """The reference's operator (runtime.ddrm.reference); a --mask is laid out as the
    reference lays out its mask files (every missing R index, then G, then B)."""
    from runtime.ddrm.reference import make_reference_operator

    missing = None
    if mask is not None and req.deg == "inp":
        missing_r = torch.nonzero(~mask.reshape(-1)).flatten().to(device) * 3
        missing = torch.cat([missing_r, missing_r + 1, missing_r + 2])
    return make_reference_operator(req.deg, image_size=size, device=device, missing=missing,
                                   generator=torch.Generator().manual_seed(req.seed))


def _reference_restore(req: RestoreRequest, nets: Networks, operator: Any, y: torch.Tensor,
                       batch_index: int, labels: list[int] | None, sigma_0: float,
                       generator: torch.Generator) -> torch.Tensor:
    """One batch the reference's way: its x_T noise drawn after y's, its sampler."""
    from runtime.ddrm.reference import reference_alphas, reference_sample

    b = y.shape[0]
    x_init = torch.randn(b, operator.channels, operator.image_size, operator.image_size,
                         device=y.device, generator=generator)
    alphas = nets.schedule.alphas_cumprod.float().to(y.device)
    if nets.schedule.num_timesteps == 1000 and torch.allclose(alphas.cpu(), reference_alphas()):
        alphas = reference_alphas(device=y.device)  # the very float32 values of the reference
    guidance = None
    eps_fn = nets.eps_fn
    if nets.make_parts is not None:
        first = batch_index * req.batch_size
        eps_fn, guidance = nets.make_parts(torch.tensor(labels[first:first + b], device=y.device))
    return reference_sample(eps_fn, operator, y, x_init, alphas_cumprod=alphas, sigma_0=sigma_0,
                            steps=req.steps, eta=req.eta, eta_b=req.eta_b, generator=generator,
                            guidance=guidance)


def write_summary(req: RestoreRequest, cfg: Any, results: list[ImageResult],
                  origin: dict[str, Any], path: Path) -> None:
    """summary.json: the run's settings, the mean metrics and what the weights were."""
    import json

    names = [k for k in asdict(results[0]) if k != "image"]
    summary = {
        "config": cfg.name, "deg": req.deg, "sigma_0": req.sigma_0, "steps": req.steps,
        "reference_compat": req.reference_compat,
        "eta": req.eta, "eta_b": req.eta_b, "seed": req.seed, "images": len(results),
        "mean": {k: sum(getattr(r, k) for r in results) / len(results) for k in names},
        "metrics_csv": str(path.with_name(CSV_NAME)),
        "provenance": origin,
    }
    path.write_text(json.dumps(summary, indent=1) + "\n")


def write_csv(results: list[ImageResult], path: Path) -> None:
    """metrics.csv: one row per image, then a ``mean`` row."""
    names = list(asdict(results[0]))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for r in results:
            writer.writerow([r.image] + [f"{getattr(r, k):.4f}" for k in names[1:]])
        means = [sum(getattr(r, k) for r in results) / len(results) for k in names[1:]]
        writer.writerow(["mean"] + [f"{m:.4f}" for m in means])
