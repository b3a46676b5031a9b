"""The CelebA-HQ DDPM (Ho et al. 2020) through diffusers, from a Hub snapshot folder.

DDRM's ``celeba_hq.yml`` runs this network (ch 128, ch_mult 1,1,2,2,4,4,
attention at 16×16, linear β 1e-4…0.02 over 1000 steps). Its original weights
sat in a test S3 bucket that no longer exists; ``google/ddpm-celebahq-256`` on the
Hub holds the same model converted to ``diffusers.UNet2DModel``. The snapshot's
``config.json`` describes the network and ``scheduler_config.json`` the schedule,
so any ``UNet2DModel`` snapshot (a tiny one in tests) loads the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from runtime.ddrm.sampler import NoiseSchedule


class DiffusersEps(nn.Module):
    """Adapter: ``UNet2DModel`` → ``eps_fn(x, t)`` returning ε as a plain tensor."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        return self.unet(x.to(dtype), t).sample.to(x.dtype)


def load_ddpm(snapshot: str | Path) -> DiffusersEps:
    """Load the UNet of a diffusers DDPM snapshot folder (config.json + weights), offline.

    Raises:
        FileNotFoundError: the folder lacks config.json.
    """
    from diffusers import UNet2DModel

    snapshot = Path(snapshot)
    if not (snapshot / "config.json").is_file():
        raise FileNotFoundError(f"{snapshot} has no config.json: not a diffusers UNet2DModel snapshot")
    unet = UNet2DModel.from_pretrained(str(snapshot), local_files_only=True)
    return DiffusersEps(unet.eval())


def ddpm_schedule(snapshot: str | Path, *, default: NoiseSchedule | None = None) -> NoiseSchedule:
    """The training schedule from ``scheduler_config.json`` (linear β), or ``default`` if absent.

    Raises:
        ValueError: a schedule other than linear (DDRM's configs use linear).
    """
    path = Path(snapshot) / "scheduler_config.json"
    if not path.is_file():
        return default or NoiseSchedule.linear()
    cfg = json.loads(path.read_text())
    if cfg.get("trained_betas") or cfg.get("beta_schedule", "linear") != "linear":
        raise ValueError(f"{path}: only the linear beta schedule is supported, got {cfg.get('beta_schedule')!r}")
    return NoiseSchedule.linear(
        float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02)), int(cfg.get("num_train_timesteps", 1000))
    )
