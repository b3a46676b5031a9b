"""The ADM UNet of openai/guided-diffusion ("Diffusion Models Beat GANs", 2021).

Small blocks composed in one class, with module names chosen so that
``state_dict()`` keys and shapes are exactly those of the published checkpoints
(``256x256_diffusion_uncond.pt``, ``256x256_diffusion.pt``): ``time_embed``,
``label_emb``, ``input_blocks``, ``middle_block``, ``output_blocks``, ``out``.
The original files load with ``load_state_dict(strict=True)``; no conversion.

The maths follows guided-diffusion's ``unet.py``: GroupNorm(32) computed in
float32, FiLM-style scale/shift from the timestep embedding, residual blocks that
up/downsample, and multi-head self-attention with the *legacy* head layout
(heads split before q/k/v), which is what the published checkpoints use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ADMConfig:
    """Architecture hyperparameters, named as guided-diffusion's ``UNetModel`` arguments.

    ``attention_resolutions`` holds *downsample rates* (1, 2, 4, …) as in
    ``UNetModel``; ``configs.adm_config_from_flags`` converts the command-line
    flags (which give resolutions such as "32,16,8") into this form.
    """

    image_size: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    channel_mult: tuple[float, ...] = (1, 2, 4, 8)
    in_channels: int = 3
    dropout: float = 0.0
    conv_resample: bool = True
    num_classes: int | None = None
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_new_attention_order: bool = False


# --- building blocks ---------------------------------------------------------


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups) computed in float32 whatever the input dtype (fp16 safety)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: ``[cos | sin]``, shape [N, dim]."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    args = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """nn.Sequential that hands the timestep embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour ×2, optionally followed by a 3×3 convolution (key: ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3×3 convolution, or 2×2 average pooling without one (key: ``op``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding; may resample (resblock_updown).

    Keys: ``in_layers.{0: norm, 2: conv}``, ``emb_layers.1``, ``out_layers.{0: norm,
    3: conv}`` and ``skip_connection`` when the channel count changes.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zeroed(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample between the activation and the convolution, and the skip path too.
            norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
            h = conv(self.h_upd(norm_act(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions. Keys: ``norm``, ``qkv``, ``proj_out``.

    ``qkv`` is a 1×1 Conv1d producing 3·C channels. In the legacy layout (the
    published checkpoints) those channels are grouped per head as [q | k | v];
    in the "new" order they are grouped [all q | all k | all v].
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.new_order = use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, legacy=not self.new_order)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


def qkv_attention(qkv: torch.Tensor, num_heads: int, *, legacy: bool) -> torch.Tensor:
    """Multi-head attention on a packed [N, 3·H·C, T] tensor; returns [N, H·C, T].

    Uses ``scaled_dot_product_attention`` (flash/memory-efficient kernels on GPU),
    which computes softmax(qᵀk/√C)·v exactly as guided-diffusion's einsum version.
    """
    n, width, length = qkv.shape
    ch = width // (3 * num_heads)
    if legacy:
        q, k, v = qkv.reshape(n, num_heads, 3 * ch, length).split(ch, dim=2)
    else:
        q, k, v = (t.reshape(n, num_heads, ch, length) for t in qkv.chunk(3, dim=1))
    # [N, H, C, T] -> [N, H, T, C] for SDPA, and back.
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return out.transpose(-1, -2).reshape(n, num_heads * ch, length)


def _zeroed(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (guided-diffusion's zero_module: blocks start as identity)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def _resample_block(
    ch: int, emb_dim: int, cfg: ADMConfig, *, down: bool
) -> nn.Module:
    """The block between two levels: a resampling ResBlock or a plain (conv) resampler."""
    if cfg.resblock_updown:
        return ResBlock(
            ch, emb_dim, cfg.dropout, out_channels=ch,
            use_scale_shift_norm=cfg.use_scale_shift_norm, up=not down, down=down,
        )
    if down:
        return Downsample(ch, cfg.conv_resample, out_channels=ch)
    return Upsample(ch, cfg.conv_resample, out_channels=ch)


def build_encoder(cfg: ADMConfig, emb_dim: int) -> tuple[nn.ModuleList, TimestepEmbedSequential, list[int], int, int]:
    """The down path and middle block shared by the UNet and the noisy classifier.

    Returns ``(input_blocks, middle_block, skip_channels, channels, downsample_rate)``.
    """
    ch = int(cfg.channel_mult[0] * cfg.model_channels)
    input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
    skip_channels = [ch]
    ds = 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            out_ch = int(mult * cfg.model_channels)
            layers: list[nn.Module] = [
                ResBlock(ch, emb_dim, cfg.dropout, out_channels=out_ch,
                         use_scale_shift_norm=cfg.use_scale_shift_norm)
            ]
            ch = out_ch
            if ds in cfg.attention_resolutions:
                layers.append(_attention(ch, cfg, cfg.num_heads))
            input_blocks.append(TimestepEmbedSequential(*layers))
            skip_channels.append(ch)
        if level != len(cfg.channel_mult) - 1:
            input_blocks.append(TimestepEmbedSequential(_resample_block(ch, emb_dim, cfg, down=True)))
            skip_channels.append(ch)
            ds *= 2
    middle_block = TimestepEmbedSequential(
        ResBlock(ch, emb_dim, cfg.dropout, use_scale_shift_norm=cfg.use_scale_shift_norm),
        _attention(ch, cfg, cfg.num_heads),
        ResBlock(ch, emb_dim, cfg.dropout, use_scale_shift_norm=cfg.use_scale_shift_norm),
    )
    return input_blocks, middle_block, skip_channels, ch, ds


def _attention(ch: int, cfg: ADMConfig, num_heads: int) -> AttentionBlock:
    return AttentionBlock(
        ch, num_heads=num_heads, num_head_channels=cfg.num_head_channels,
        use_new_attention_order=cfg.use_new_attention_order,
    )


def time_embed_mlp(model_channels: int) -> nn.Sequential:
    """``time_embed``: Linear(C, 4C) → SiLU → Linear(4C, 4C)."""
    dim = 4 * model_channels
    return nn.Sequential(nn.Linear(model_channels, dim), nn.SiLU(), nn.Linear(dim, dim))


class UNetModel(nn.Module):
    """The ADM UNet: ε-prediction (and, with learn_sigma, variance) from (x_t, t[, y]).

    Args:
        cfg: architecture; see ``ADMConfig`` and ``configs.adm_config_from_flags``.
    """

    def __init__(self, cfg: ADMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model_channels = cfg.model_channels
        self.num_classes = cfg.num_classes
        self.torso_dtype = torch.float32
        emb_dim = 4 * cfg.model_channels
        self.time_embed = time_embed_mlp(cfg.model_channels)
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)

        self.input_blocks, self.middle_block, skips, ch, ds = build_encoder(cfg, emb_dim)
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                out_ch = int(cfg.model_channels * mult)
                layers: list[nn.Module] = [
                    ResBlock(ch + skips.pop(), emb_dim, cfg.dropout, out_channels=out_ch,
                             use_scale_shift_norm=cfg.use_scale_shift_norm)
                ]
                ch = out_ch
                if ds in cfg.attention_resolutions:
                    layers.append(_attention(ch, cfg, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(_resample_block(ch, emb_dim, cfg, down=False))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        first_ch = int(cfg.channel_mult[0] * cfg.model_channels)
        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), _zeroed(nn.Conv2d(first_ch, cfg.out_channels, 3, padding=1))
        )

    def convert_to_fp16(self) -> None:
        """Run the convolutions of the torso in float16 (as guided-diffusion's use_fp16).

        Norms and the timestep MLP stay in float32; use on GPU only.
        """
        self.torso_dtype = torch.float16
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            part.apply(_conv_to_fp16)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x [N, C, H, W]; timesteps [N] (0…T-1, may be float); y [N] class ids iff class-conditional.

        Returns: [N, out_channels, H, W] (ε, then the variance interpolation when learn_sigma).
        """
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y if and only if the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        skips: list[torch.Tensor] = []
        h = x.type(self.torso_dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


def _conv_to_fp16(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        module.half()


def count_parameters(module: nn.Module, *, exclude: Sequence[str] = ()) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(tuple(exclude)))
