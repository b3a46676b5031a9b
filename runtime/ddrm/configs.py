"""The three DDRM configurations, kept as data apart from the networks (timm-style).

Each ``RestoreConfig`` says which bundle artifact holds the weights, how to build
the network (guided-diffusion model flags, or a diffusers snapshot), the noise
schedule, and whether classifier guidance is used. Flags use guided-diffusion's
command-line names, so a user's ``MODEL_FLAGS`` string from its README can
override any of them (``bundle run ddrm restore --model-flags "..."``).

This module imports only the standard library.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from runtime.ddrm.key_manifest import PUBLISHED_CLASSIFIER_FLAGS, PUBLISHED_MODEL_FLAGS
from runtime.errors import FlagError

#: What each configuration resolves, by ref: any artifact id in a spec matches
#: (bundles/ddrm.toml calls them adm-256-uncond, adm-256-cond, adm-256-classifier and
#: ddpm-celebahq-256).
_OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021"
ADM_UNCOND = f"{_OPENAI}/256x256_diffusion_uncond.pt"
ADM_COND = f"{_OPENAI}/256x256_diffusion.pt"
ADM_CLASSIFIER = f"{_OPENAI}/256x256_classifier.pt"
CELEBA_DDPM = "google/ddpm-celebahq-256"


@dataclass(frozen=True)
class RestoreConfig:
    """One published DDRM setting.

    Attributes:
        name: what ``--config`` takes.
        network: ``"adm"`` (guided-diffusion UNet, a .pt file) or ``"diffusers"``
            (a ``UNet2DModel`` snapshot folder with config.json).
        model_artifact: artifact id or ref of the denoiser weights.
        model_flags: guided-diffusion flags of the ADM network (empty for diffusers).
        classifier_artifact / classifier_flags / classifier_scale: guidance, if any.
        beta_start, beta_end, num_timesteps: the linear noise schedule the network was trained with.
    """

    name: str
    network: str
    model_artifact: str
    model_flags: dict[str, object] = field(default_factory=dict)
    classifier_artifact: str | None = None
    classifier_flags: dict[str, object] = field(default_factory=dict)
    classifier_scale: float = 1.0
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    @property
    def class_cond(self) -> bool:
        return bool(self.model_flags.get("class_cond", False))


CONFIGS: dict[str, RestoreConfig] = {
    # DDRM's configs/celeba_hq.yml: the DDPM of Ho et al. (the weights DDRM fetched from
    # a now-deleted bucket), taken from its diffusers port on the Hub.
    "celeba": RestoreConfig(name="celeba", network="diffusers", model_artifact=CELEBA_DDPM),
    # DDRM's configs/imagenet_256.yml
    "imagenet-uncond": RestoreConfig(
        name="imagenet-uncond", network="adm", model_artifact=ADM_UNCOND,
        model_flags=dict(PUBLISHED_MODEL_FLAGS["256x256_diffusion_uncond.pt"]),
    ),
    # DDRM's configs/imagenet_256_cc.yml: class-conditional model + classifier guidance, scale 1.
    "imagenet-cond": RestoreConfig(
        name="imagenet-cond", network="adm", model_artifact=ADM_COND,
        model_flags=dict(PUBLISHED_MODEL_FLAGS["256x256_diffusion.pt"]),
        classifier_artifact=ADM_CLASSIFIER,
        classifier_flags=dict(PUBLISHED_CLASSIFIER_FLAGS["256x256_classifier.pt"]),
        classifier_scale=1.0,
    ),
}


def parse_flags(text: str) -> dict[str, object]:
    """Parse guided-diffusion style flags: ``"--num_channels 64 --learn_sigma True"``.

    Values become int, float or bool when they look like one; lists such as
    ``32,16,8`` stay strings (the builders split them).

    Raises:
        FlagError: a token is not ``--name value``.
    """
    tokens = shlex.split(text)
    if len(tokens) % 2:
        raise FlagError(f"flags must come in '--name value' pairs, got {text!r}")
    flags: dict[str, object] = {}
    for name, value in zip(tokens[::2], tokens[1::2], strict=True):
        if not name.startswith("--"):
            raise FlagError(f"expected a flag starting with '--', got {name!r} in {text!r}")
        flags[name[2:].replace("-", "_")] = _typed(value)
    return flags


def _typed(value: str) -> object:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


_DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def _channel_mult(flags: dict[str, object]) -> tuple[float, ...]:
    raw = flags.get("channel_mult", "")
    if raw in ("", None):
        size = int(flags["image_size"])  # type: ignore[arg-type]
        if size not in _DEFAULT_MULT:
            raise FlagError(f"no default channel_mult for image_size {size}; pass --channel_mult")
        return _DEFAULT_MULT[size]
    return tuple(float(m) if "." in m else int(m) for m in str(raw).split(","))


def _attention_rates(size: int, resolutions: object) -> tuple[int, ...]:
    return tuple(size // int(r) for r in str(resolutions).split(","))


def adm_config_from_flags(flags: dict[str, object]):  # -> unet.ADMConfig (lazy import: torch)
    """The ``ADMConfig`` that guided-diffusion's ``create_model(**flags)`` would build."""
    from runtime.ddrm.unet import ADMConfig

    size = int(flags["image_size"])  # type: ignore[arg-type]
    return ADMConfig(
        image_size=size,
        model_channels=int(flags["num_channels"]),  # type: ignore[arg-type]
        out_channels=6 if flags.get("learn_sigma", False) else 3,
        num_res_blocks=int(flags["num_res_blocks"]),  # type: ignore[arg-type]
        attention_resolutions=_attention_rates(size, flags.get("attention_resolutions", "16")),
        channel_mult=_channel_mult(flags),
        dropout=float(flags.get("dropout", 0.0)),  # type: ignore[arg-type]
        num_classes=1000 if flags.get("class_cond", False) else None,
        num_heads=int(flags.get("num_heads", 1)),  # type: ignore[arg-type]
        num_head_channels=int(flags.get("num_head_channels", -1)),  # type: ignore[arg-type]
        num_heads_upsample=int(flags.get("num_heads_upsample", -1)),  # type: ignore[arg-type]
        use_scale_shift_norm=bool(flags.get("use_scale_shift_norm", False)),
        resblock_updown=bool(flags.get("resblock_updown", False)),
        use_new_attention_order=bool(flags.get("use_new_attention_order", False)),
    )


def classifier_config_from_flags(flags: dict[str, object]):  # -> unet.ADMConfig
    """The ``ADMConfig`` that guided-diffusion's ``create_classifier(**flags)`` would build."""
    from runtime.ddrm.unet import ADMConfig

    if flags.get("classifier_pool", "attention") != "attention":
        raise FlagError("only classifier_pool attention (the published classifier) is supported")
    size = int(flags["image_size"])  # type: ignore[arg-type]
    return ADMConfig(
        image_size=size,
        model_channels=int(flags["classifier_width"]),  # type: ignore[arg-type]
        out_channels=int(flags.get("num_classes", 1000)),  # type: ignore[arg-type]
        num_res_blocks=int(flags["classifier_depth"]),  # type: ignore[arg-type]
        attention_resolutions=_attention_rates(size, flags["classifier_attention_resolutions"]),
        channel_mult=_channel_mult({"image_size": size, "channel_mult": flags.get("channel_mult", "")}),
        num_head_channels=int(flags.get("num_head_channels", 64)),  # type: ignore[arg-type]
        use_scale_shift_norm=bool(flags.get("classifier_use_scale_shift_norm", True)),
        resblock_updown=bool(flags.get("classifier_resblock_updown", True)),
    )


def get_config(name: str) -> RestoreConfig:
    """The configuration called ``name``; raises KeyError listing the known ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown DDRM config {name!r}; known: {', '.join(CONFIGS)}") from None
