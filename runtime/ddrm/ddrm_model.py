"""The DDPM network of DDRM's own repository (``models/diffusion.py`` ``Model``): ``celeba_hq.ckpt``.

DDRM's CelebA-HQ checkpoint is a plain state dict of that network (Ho et al.'s DDPM
architecture as ported by Song et al.): ch 128, ch_mult (1, 1, 2, 2, 4, 4), two
residual blocks per level, attention at 16×16, convolutional resampling, 256 px.
Users often hold that file (a Kaggle dataset, a copy from the deleted bucket); the
diffusers port on the Hub is a different layout. This module rebuilds the network
with the very parameter names of the file, so it loads as it is, and infers the
hyper-parameters from the tensors themselves (:func:`config_from_state_dict`), so a
model of another size or resolution loads as well.

Written from the architecture (GroupNorm(32) with eps 1e-6, swish, sinusoidal time
embedding of ``ch`` dims -> two linear layers of 4·ch, single-head attention over
pixels); ``tests/reference/ddrm`` holds the reference implementation (MIT) that the
tests compare against, key by key and output by output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DDPMConfig:
    """Hyper-parameters of the network (DDRM's ``config.model`` plus the image size)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    in_channels: int = 3
    out_ch: int = 3
    resolution: int = 256
    resamp_with_conv: bool = True
    dropout: float = 0.0


#: DDRM's configs/celeba_hq.yml
CELEBA_HQ = DDPMConfig()


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of DDPM: sin of the first half, cos of the second half."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class _Resample(nn.Module):
    def __init__(self, channels: int, with_conv: bool, *, down: bool) -> None:
        super().__init__()
        self.down = down
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)
        else:
            self.conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.down:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            return self.conv(x) if self.conv is not None else x
        if self.conv is None:
            return F.avg_pool2d(x, 2, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as TF's "SAME" for stride 2


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = h + self.temb_proj(_swish(temb))[:, :, None, None]
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class _Attention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        k = self.k(n).reshape(b, c, h * w)  # [B, C, HW]
        v = self.v(n).reshape(b, c, h * w)
        weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)  # [B, HW(query), HW(key)]
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class _Level(nn.Module):
    """One resolution of the encoder or decoder: ``block``, ``attn`` and a resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class DDPMModel(nn.Module):
    """ε(x_t, t) of DDRM's ``Model``; parameter names are those of its checkpoints."""

    def __init__(self, cfg: DDPMConfig = CELEBA_HQ) -> None:
        super().__init__()
        self.cfg = cfg
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        temb = 4 * ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        res, block_in, skips = cfg.resolution, ch, [ch]
        self.down = nn.ModuleList()
        for level, m in enumerate(mult):
            lvl = _Level()
            for _ in range(cfg.num_res_blocks):
                lvl.block.append(_ResBlock(block_in, ch * m, temb, cfg.dropout))
                block_in = ch * m
                if res in cfg.attn_resolutions:
                    lvl.attn.append(_Attention(block_in))
                skips.append(block_in)
            if level != len(mult) - 1:
                lvl.downsample = _Resample(block_in, cfg.resamp_with_conv, down=True)
                res //= 2
                skips.append(block_in)
            self.down.append(lvl)
        self.mid = nn.Module()
        self.mid.block_1 = _ResBlock(block_in, block_in, temb, cfg.dropout)
        self.mid.attn_1 = _Attention(block_in)
        self.mid.block_2 = _ResBlock(block_in, block_in, temb, cfg.dropout)
        ups: list[_Level] = []
        for level in reversed(range(len(mult))):
            lvl = _Level()
            for _ in range(cfg.num_res_blocks + 1):
                lvl.block.append(_ResBlock(block_in + skips.pop(), ch * mult[level], temb, cfg.dropout))
                block_in = ch * mult[level]
                if res in cfg.attn_resolutions:
                    lvl.attn.append(_Attention(block_in))
            if level != 0:
                lvl.upsample = _Resample(block_in, cfg.resamp_with_conv, down=False)
                res *= 2
            ups.insert(0, lvl)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.resolution or x.shape[-2] != self.cfg.resolution:
            raise ValueError(f"this network takes {self.cfg.resolution}×{self.cfg.resolution} images, "
                             f"got {tuple(x.shape[-2:])}")
        temb = self.temb.dense[1](_swish(self.temb.dense[0](timestep_embedding(t, self.cfg.ch))))
        hs = [self.conv_in(x)]
        for level, lvl in enumerate(self.down):
            for i, block in enumerate(lvl.block):
                h = block(hs[-1], temb)
                hs.append(lvl.attn[i](h) if len(lvl.attn) else h)
            if level != len(self.down) - 1:
                hs.append(lvl.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for level in reversed(range(len(self.up))):
            lvl = self.up[level]
            for i, block in enumerate(lvl.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(lvl.attn):
                    h = lvl.attn[i](h)
            if level != 0:
                h = lvl.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


def is_ddpm_state_dict(state: dict) -> bool:
    """True for a state dict of DDRM's ``Model`` (its time-embedding and first-level names)."""
    return "temb.dense.0.weight" in state and "down.0.block.0.conv1.weight" in state


def config_from_state_dict(state: dict, *, resolution: int = 256) -> DDPMConfig:
    """The hyper-parameters a ``Model`` state dict was saved with (the image size is not in
    the tensors: ``resolution``, 256 for CelebA-HQ)."""
    ch = int(state["conv_in.weight"].shape[0])
    levels = sorted({int(k.split(".")[1]) for k in state if k.startswith("down.")})
    mult = tuple(int(state[f"down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in levels)
    blocks = len({k.split(".")[3] for k in state if k.startswith("down.0.block.")})
    attn, res = [], resolution
    for i in levels:
        if f"down.{i}.attn.0.q.weight" in state:
            attn.append(res)
        res //= 2
    return DDPMConfig(
        ch=ch, ch_mult=mult, num_res_blocks=blocks, attn_resolutions=tuple(attn),
        in_channels=int(state["conv_in.weight"].shape[1]), out_ch=int(state["conv_out.weight"].shape[0]),
        resolution=resolution, resamp_with_conv="down.0.downsample.conv.weight" in state,
    )


def strip_wrappers(state: dict) -> dict:
    """Keys without the ``module.`` prefix DataParallel saves (DDRM's runners wrap the model)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state
