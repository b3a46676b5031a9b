"""The noisy ImageNet classifier of guided-diffusion (``256x256_classifier.pt``).

The encoder half of the ADM UNet (same ``time_embed``, ``input_blocks`` and
``middle_block`` keys) followed by ``out``: GroupNorm → SiLU → an attention pool
adapted from CLIP (keys ``out.2.positional_embedding``, ``out.2.qkv_proj``,
``out.2.c_proj``). It reads x_t and t and returns ImageNet logits; its gradient
guides the class-conditional sampler.
"""

from __future__ import annotations

import torch
from torch import nn

from runtime.ddrm.unet import (
    ADMConfig,
    GroupNorm32,
    _conv_to_fp16,
    build_encoder,
    qkv_attention,
    time_embed_mlp,
    timestep_embedding,
)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean feature queries every position; returns [N, output_dim].

    Uses the "new" q/k/v order (all q, all k, all v), as guided-diffusion does here.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim, 1)
        self.num_heads = embed_dim // num_head_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, *_ = x.shape
        x = x.reshape(n, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = qkv_attention(self.qkv_proj(x), self.num_heads, legacy=False)
        return self.c_proj(x)[:, :, 0]


class EncoderUNetModel(nn.Module):
    """The half UNet with an attention-pool head (``pool="attention"``), a noisy classifier.

    Args:
        cfg: architecture; ``out_channels`` is the number of classes and
            ``num_head_channels`` must be set (the pool splits heads by it).
    """

    def __init__(self, cfg: ADMConfig) -> None:
        super().__init__()
        if cfg.num_head_channels == -1:
            raise ValueError("the attention pool needs num_head_channels")
        self.cfg = cfg
        self.model_channels = cfg.model_channels
        self.torso_dtype = torch.float32
        self.time_embed = time_embed_mlp(cfg.model_channels)
        self.input_blocks, self.middle_block, _, ch, ds = build_encoder(cfg, 4 * cfg.model_channels)
        self.out = nn.Sequential(
            GroupNorm32(ch),
            nn.SiLU(),
            AttentionPool2d(cfg.image_size // ds, ch, cfg.num_head_channels, cfg.out_channels),
        )

    def convert_to_fp16(self) -> None:
        """Run the encoder convolutions in float16 (GPU only); the head stays float32."""
        self.torso_dtype = torch.float16
        for part in (self.input_blocks, self.middle_block):
            part.apply(_conv_to_fp16)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Args: x [N, 3, S, S] noisy images in [-1, 1]; timesteps [N]. Returns logits [N, classes]."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.type(self.torso_dtype)
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.type(x.dtype))
