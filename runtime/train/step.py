"""One optimiser step, done right under mixed precision.

The order is the one in the PyTorch AMP recipe: scale the loss, backward (over
several micro-batches when accumulating), unscale, clip, ``scaler.step``,
``scaler.update``, scheduler, zero the gradients. Two situations the seed
notebooks got wrong are handled here:

- no parameter received a gradient (everything frozen, an empty batch, a branch
  not taken): ``scaler.step`` would raise "No inf checks were recorded for this
  optimizer"; we skip the step and leave the optimiser, scaler and scheduler as
  they were;
- the scaler found inf/NaN gradients and skipped the step: the learning-rate
  schedule must not advance either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from runtime.train.precision import PrecisionPolicy


def backward(loss: torch.Tensor, policy: PrecisionPolicy, *, accum_steps: int = 1) -> None:
    """Backward of one micro-batch's loss, scaled for fp16 and for accumulation.

    Args:
        loss: the mean loss of the micro-batch.
        policy: the run's precision policy (its scaler, if any, scales the loss).
        accum_steps: how many micro-batches make one optimiser step; the loss is
            divided by it so that the accumulated gradient is the mean over them.
    """
    loss = loss / accum_steps
    if policy.scaler is not None:
        loss = policy.scaler.scale(loss)
    loss.backward()


def has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """True when at least one parameter the optimiser updates has a gradient."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    policy: PrecisionPolicy,
    *,
    max_grad_norm: float | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> bool:
    """Apply the accumulated gradients: unscale, clip, step, update, schedule, zero.

    Args:
        optimizer: the optimiser whose parameters hold the accumulated gradients.
        policy: the precision policy; with a GradScaler the step may be skipped
            when the scaler finds inf/NaN gradients.
        max_grad_norm: clip the global gradient norm to this (after unscaling);
            None or <= 0 disables clipping.
        scheduler: stepped only when the optimiser really stepped.

    Returns:
        True if the parameters were updated, False if the step was skipped (no
        gradients at all, or inf/NaN gradients under fp16).
    """
    import torch

    if not has_gradients(optimizer):
        # Nothing to apply. Calling scaler.step here raises "No inf checks were
        # recorded for this optimizer"; skipping keeps every state unchanged.
        optimizer.zero_grad(set_to_none=True)
        return False

    scaler = policy.scaler
    if scaler is not None:
        if max_grad_norm and max_grad_norm > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(_params_with_grad(optimizer), max_grad_norm)
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        # The scaler lowers its scale exactly when it found inf/NaN and skipped.
        stepped = scaler.get_scale() >= scale_before
    else:
        if max_grad_norm and max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(_params_with_grad(optimizer), max_grad_norm)
        optimizer.step()
        stepped = True

    if stepped and scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def _params_with_grad(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
