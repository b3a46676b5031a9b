"""Classifier architectures by name, with where their pretrained weights come from.

A registry in the style of timm: each entry is data (family, torchvision weights
name, default input size) plus a build function, so adding an architecture is
adding one ``register(...)`` call, not editing a dispatcher.

Pretrained weights are loaded through torchvision's unmodified ``weights=`` API.
Inside a bundle, ``runtime.activate()`` points ``TORCH_HOME`` at the bundle view, so
``vit_b_16(weights=ViT_B_16_Weights.IMAGENET1K_V1)`` finds
``$TORCH_HOME/hub/checkpoints/vit_b_16-c867db91.pth`` and never downloads. We check
that the file is there first (a clear error instead of a download attempt) and
force ``weights_only`` unpickling while torchvision loads it: torchvision calls
``torch.hub.load_state_dict_from_url(..., weights_only=False)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runtime.vision.errors import (
    CheckpointError,
    MissingWeightsError,
    OptionError,
    UnknownArchitectureError,
    UnsafeWeightsError,
)

if TYPE_CHECKING:
    from torch import nn

#: torch reads this at every torch.load() call; "1" turns weights_only on even
#: where the caller (torch.hub) passes weights_only=False.
TORCH_FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"

#: Normalisation the torchvision ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Family = Literal["vit", "cnn"]


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """One classifier architecture.

    Attributes:
        name: what ``--arch`` takes.
        weights: the torchvision weights enum name (``"ViT_B_16_Weights.IMAGENET1K_V1"``),
            which is also the artifact ``ref`` in the bundle; None when trained from scratch.
        build: ``build(num_outputs, image_size, weights, widths) -> nn.Module``, with
            ``weights`` the name above to start from it, None for random initialisation.
        head_prefix: parameter-name prefix of the freshly initialised head (it
            trains at the full learning rate; the rest is the backbone).
        first_conv: the module path of the first convolution, the layer that reads
            the bands (``adapt_first_conv`` replaces it for non-RGB inputs).
        family: "vit" (has attention maps) or "cnn".
        default_image_size: the input size the weights were trained at.
        size_multiple: the image size must be a multiple of this.
    """

    name: str
    weights: str | None
    build: Callable[..., nn.Module]
    head_prefix: str
    first_conv: str
    family: Family = "cnn"
    default_image_size: int = 224
    size_multiple: int = 1
    description: str = ""


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    """The registered architecture `name`.

    Raises:
        UnknownArchitectureError: with the list of known names.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown --arch {name!r}; known architectures: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


# --- Loading torchvision weights from the bundle ----------------------------


def weights_file(weights_name: str) -> Path:
    """Where torchvision looks for `weights_name`: ``$TORCH_HOME/hub/checkpoints/FILE``."""
    import torch.hub
    from torchvision.models import get_weight

    url = get_weight(weights_name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


@contextlib.contextmanager
def weights_only_loads(weights_name: str = "") -> Iterator[None]:
    """Make every torch.load() in the block unpickle tensors only (no code execution).

    Raises:
        UnsafeWeightsError: a file loaded in the block holds pickled objects other
            than tensors and plain containers (what an injected payload looks like).
    """
    import pickle

    from runtime import constants

    with constants.temporarily(TORCH_FORCE_WEIGHTS_ONLY_ENV, "1"):
        try:
            yield
        except pickle.UnpicklingError as err:
            where = weights_file(weights_name) if weights_name else "a weights file"
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnsafeWeightsError(
                f"refusing to load {weights_name or 'weights'} from {where}: it holds pickled "
                f"objects other than tensors ({first_line}). Rebuild the bundle from the "
                "official URL with its hash check (bundle build), or pin the sha256 of a "
                "file you trust"
            ) from err


def pretrained_weights(weights_name: str) -> Any:
    """The torchvision weights enum member, after checking its file is in the bundle.

    Raises:
        MissingWeightsError: the checkpoint file is not under ``$TORCH_HOME``; the
            message says which artifact to add to the spec.
    """
    from torchvision.models import get_weight

    path = weights_file(weights_name)
    if not path.is_file():
        raise MissingWeightsError(
            f"pretrained weights {weights_name} not found: {path} does not exist. Add "
            f'[[artifact]] source = "torchvision", weights = "{weights_name}" to the bundle '
            "spec, build and attach the bundle (runtime.activate() sets TORCH_HOME), "
            "or pass --no-pretrained"
        )
    return get_weight(weights_name)


# --- Architectures ----------------------------------------------------------


def resize_vit(model: Any, image_size: int) -> None:
    """Adapt a torchvision VisionTransformer to `image_size` in place.

    The position embeddings are interpolated (bicubic) with torchvision's own
    ``interpolate_embeddings``, the way its docs recommend for a new resolution.
    """
    import torch
    from torchvision.models.vision_transformer import interpolate_embeddings

    if image_size == model.image_size:
        return
    state = interpolate_embeddings(
        image_size, model.patch_size, {"encoder.pos_embedding": model.encoder.pos_embedding.data}
    )
    model.encoder.pos_embedding = torch.nn.Parameter(state["encoder.pos_embedding"])
    model.image_size = image_size
    model.seq_length = state["encoder.pos_embedding"].shape[1]


def torchvision_model(constructor: Callable[..., nn.Module], weights: str | None,
                      **scratch: Any) -> nn.Module:
    """``constructor(weights=...)`` with the bundle's copy of ``weights`` (checked there
    first, unpickled as tensors only), or ``constructor(**scratch)`` when ``weights`` is
    None (random initialisation)."""
    if weights is None:
        return constructor(**scratch)
    member = pretrained_weights(weights)
    with weights_only_loads(weights):
        return constructor(weights=member)


def _build_vit_b_16(num_outputs: int, image_size: int, weights: str | None, **_: Any) -> nn.Module:
    from collections import OrderedDict

    from torch import nn
    from torchvision.models import vit_b_16

    model = torchvision_model(vit_b_16, weights, image_size=image_size)
    resize_vit(model, image_size)  # pretrained ones are built at 224, the weights' size
    model.heads = nn.Sequential(OrderedDict(head=nn.Linear(model.hidden_dim, num_outputs)))
    return model


def _build_mobilenet_v3_small(num_outputs: int, image_size: int, weights: str | None,
                              **_: Any) -> nn.Module:
    from torch import nn
    from torchvision.models import mobilenet_v3_small

    model = torchvision_model(mobilenet_v3_small, weights)
    last = model.classifier[-1]
    model.classifier[-1] = nn.Linear(last.in_features, num_outputs)
    return model


def _build_resnet18(num_outputs: int, image_size: int, weights: str | None, **_: Any) -> nn.Module:
    from torch import nn
    from torchvision.models import resnet18

    model = torchvision_model(resnet18, weights)
    model.fc = nn.Linear(model.fc.in_features, num_outputs)
    return model


def _build_unet_cnn(
    num_outputs: int, image_size: int, weights: str | None, widths: tuple[int, ...] | None = None,
    in_channels: int = 3,
) -> nn.Module:
    from runtime.vision.unet import DEFAULT_WIDTHS, UNetClassifier

    return UNetClassifier(num_outputs, in_channels=in_channels, widths=tuple(widths or DEFAULT_WIDTHS))


register(Architecture(
    name="vit_b_16", weights="ViT_B_16_Weights.IMAGENET1K_V1", build=_build_vit_b_16,
    head_prefix="heads.head.", first_conv="conv_proj", family="vit", size_multiple=16,
    description="torchvision ViT-B/16 (86M), ImageNet-1k weights, head replaced",
))
register(Architecture(
    name="mobilenet_v3_small", weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1",
    build=_build_mobilenet_v3_small, head_prefix="classifier.3.", first_conv="features.0.0",
    description="torchvision MobileNetV3-Small (2.5M), ImageNet-1k weights",
))
register(Architecture(
    name="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1", build=_build_resnet18,
    head_prefix="fc.", first_conv="conv1",
    description="torchvision ResNet-18 (11.7M), ImageNet-1k weights",
))
register(Architecture(
    name="unet_cnn", weights=None, build=_build_unet_cnn, head_prefix="head.",
    first_conv="encoder.stem.layers.0", default_image_size=64, size_multiple=8,
    description="our U-Net encoder + linear head; from scratch or --init-encoder (masked-ssl)",
))


def adapt_first_conv(model: nn.Module, arch_name: str, in_channels: int) -> nn.Module:
    """Make the first convolution read ``in_channels`` bands instead of RGB, in place.

    The rule: every new input channel gets the mean of the three RGB filters, scaled by
    3 / ``in_channels``. A scene that is the same in every band then gives the same
    response as a grey RGB image did, so the layers above see inputs on the scale their
    pretrained weights expect; nothing but this one weight changes.
    """
    import torch
    from torch import nn

    if in_channels == 3:
        return model
    path = get_architecture(arch_name).first_conv
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old: nn.Conv2d = getattr(parent, name)
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                    padding=old.padding, dilation=old.dilation, groups=old.groups,
                    bias=old.bias is not None, padding_mode=old.padding_mode)
    with torch.no_grad():
        mean_rgb = old.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean_rgb.expand(-1, in_channels, -1, -1) * (3.0 / in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, name, new.to(old.weight.device, old.weight.dtype))
    return model


def build_classifier(
    arch_name: str,
    *,
    num_outputs: int,
    image_size: int,
    pretrained: bool,
    init_encoder: Path | None = None,
    widths: tuple[int, ...] | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """Build a classifier with `num_outputs` logits for `image_size` inputs.

    Args:
        arch_name: a registered architecture (see ``ARCHITECTURES``).
        num_outputs: number of logits (classes, or 1 for binary).
        image_size: square input size; must be a multiple of the architecture's
            ``size_multiple``.
        pretrained: load the architecture's torchvision weights from the bundle.
        init_encoder: a masked-ssl ``encoder.pt``; only for ``unet_cnn``.
        widths: U-Net widths of ``unet_cnn`` (default ``unet.DEFAULT_WIDTHS``, or
            those of `init_encoder`).
        in_channels: bands of the input (3: RGB); a pretrained first layer is adapted
            (see :func:`adapt_first_conv`), ``unet_cnn`` is built for them.

    Raises:
        UnknownArchitectureError, MissingWeightsError, CheckpointError, OptionError.
    """
    arch = get_architecture(arch_name)
    if image_size % arch.size_multiple:
        raise OptionError(
            f"--image-size {image_size} does not suit --arch {arch.name}: use a multiple of "
            f"{arch.size_multiple}"
        )
    if init_encoder is None:
        weights = arch.weights if pretrained else None
        if arch.name == "unet_cnn":
            return arch.build(num_outputs, image_size, None, widths=widths, in_channels=in_channels)
        return adapt_first_conv(arch.build(num_outputs, image_size, weights, widths=widths),
                                arch.name, in_channels)
    if arch.name != "unet_cnn":
        raise CheckpointError(
            f"--init-encoder {init_encoder}: only --arch unet_cnn can start from a masked-ssl "
            f"encoder, not {arch.name}"
        )
    encoder = load_encoder_file(init_encoder)
    if encoder["in_channels"] != in_channels:
        raise CheckpointError(
            f"--init-encoder {init_encoder} reads {encoder['in_channels']} band(s), the data "
            f"{in_channels}: pre-train with the same --bands (masked-ssl pretrain --bands ...)"
        )
    model = arch.build(num_outputs, image_size, None, widths=encoder["widths"],
                       in_channels=in_channels)
    model.encoder.load_state_dict(encoder["state_dict"])
    return model


def load_encoder_file(path: Path) -> dict[str, Any]:
    """Read a masked-ssl ``encoder.pt`` (``{"kind", "widths", "in_channels", "state_dict"}``):
    a file, or the name of a masked-ssl run bundle (bundle from-run) that holds one.

    Raises:
        CheckpointError: missing file or not an encoder written by masked-ssl.
    """
    from runtime.resolve import resolve_checkpoint
    from runtime.train.checkpoint import safe_torch_load

    path = resolve_checkpoint(path, option="--init-encoder", filename="encoder.pt").path
    hint = "Pass the encoder.pt that `bundle run masked-ssl pretrain` writes."
    data = safe_torch_load(path, what="--init-encoder", expected="a masked-ssl encoder.pt",
                           hint=hint)
    if not isinstance(data, dict) or data.get("kind") != "unet-encoder":
        raise CheckpointError(
            f"{path} is not a masked-ssl encoder file (expected the encoder.pt that "
            "`masked-ssl pretrain` writes)"
        )
    data["widths"] = tuple(int(w) for w in data["widths"])
    data["in_channels"] = int(data.get("in_channels", 3))
    return data
