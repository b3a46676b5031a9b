"""The training loop, readable top to bottom: epochs of steps, evaluation, checkpoints.

A stack supplies two small functions and keeps its recipe in its own module:

- ``compute_loss(model, batch) -> loss`` for one (device-resident) batch, or
  None when the batch has nothing to learn from (it is then skipped, see
  :func:`train_one_epoch`);
- ``evaluate(model) -> dict[str, float]`` run on every rank (it gathers), the
  metrics used for logging and model selection.

:func:`fit` then does, each epoch: train (autocast, scaled backward,
accumulation with DDP's ``no_sync``, clipped step), evaluate, write the curves,
save ``last.pt`` (everything a resume needs) and, when the selection metric
improved, ``best.pt`` (the model, its config, metrics and provenance only).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.train.checkpoint import BestTracker, load_checkpoint, save_checkpoint
from runtime.train.curves import write_curves
from runtime.train.distributed import (
    SINGLE_PROCESS,
    DistContext,
    all_reduce_sum,
    barrier,
    every_rank,
    gather,
)
from runtime.train.step import backward, optimizer_step

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from runtime.train.precision import PrecisionPolicy

#: Epochs at least this long redraw curves.png each time (shorter ones only at the end).
PNG_EVERY_EPOCH_S = 30.0
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in a batch (nested tuples, lists, dicts) moved to ``device``."""
    if hasattr(batch, "to"):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


@dataclass
class EpochStats:
    """What one training epoch did, summed over ranks.

    Attributes:
        loss: mean loss over the micro-batches that were learnt from.
        steps: optimiser steps taken (this rank; the same on every rank).
        skipped_steps: optimiser steps skipped (no gradient, or inf/NaN under fp16).
        samples: samples seen, skipped micro-batches included.
        seconds: wall time of the epoch.
        skipped_batches: micro-batches whose ``compute_loss`` returned None
            (under DDP: on any rank, since every rank drops them together).
    """

    loss: float
    steps: int
    skipped_steps: int
    samples: int
    seconds: float
    skipped_batches: int = 0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    compute_loss: Callable[[nn.Module, Any], torch.Tensor | None],
    optimizer: torch.optim.Optimizer,
    policy: PrecisionPolicy,
    ctx: DistContext = SINGLE_PROCESS,
    scheduler: Any = None,
    accum_steps: int = 1,
    max_grad_norm: float | None = 1.0,
    progress: bool = True,
    desc: str = "train",
) -> EpochStats:
    """One pass over ``loader`` with gradient accumulation.

    Every ``accum_steps`` micro-batches (and at the end of the epoch) one
    optimiser step is taken; gradients are averaged over the micro-batches of
    the step, so accumulating 2 × 4 samples matches one batch of 8.

    ``compute_loss`` may return None for a micro-batch with nothing to learn
    from (e.g. an empty random mask): it gets no backward and counts as zero in
    its step's mean; a step all of whose micro-batches were skipped is skipped
    (see :func:`~runtime.train.step.optimizer_step`). Under DDP every backward
    is a collective, so the ranks agree on each micro-batch (a one-number vote
    on the CPU): when any rank returns None, every rank drops that micro-batch.

    Returns:
        :class:`EpochStats` (mean loss over ranks and micro-batches, steps taken,
        steps skipped, samples seen, wall time).
    """
    import torch
    from tqdm.auto import tqdm

    model.train()
    optimizer.zero_grad(set_to_none=True)
    started = time.perf_counter()
    n_batches = len(loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=policy.device)
    samples = steps = skipped = learnt = dropped = 0
    group_learnt = False  # whether a micro-batch of the current step had a backward
    bar = tqdm(
        loader, desc=desc, disable=not (progress and ctx.is_main), file=sys.stderr, leave=False
    )
    for i, batch in enumerate(bar):
        batch = move_to_device(batch, policy.device)
        group_start = (i // accum_steps) * accum_steps
        micro_in_group = min(accum_steps, n_batches - group_start)
        last_micro = i == group_start + micro_in_group - 1
        # Under DDP, only the last micro-batch of a step all-reduces gradients.
        sync = contextlib.nullcontext() if last_micro or not ctx.enabled else model.no_sync()
        with sync:
            with policy.autocast():
                loss = compute_loss(model, batch)
            if _every_rank_has_a_loss(loss, ctx):
                backward(loss, policy, accum_steps=micro_in_group)
                loss_sum += loss.detach().double()
                learnt += 1
                group_learnt = True
            else:
                dropped += 1
                if last_micro and group_learnt and ctx.enabled:
                    # The backward that would have all-reduced the step's gradients was
                    # dropped; the earlier micro-batches ran under no_sync, so average here.
                    _all_reduce_mean_gradients(optimizer, ctx)
        samples += _batch_size(batch)
        if last_micro:
            group_learnt = False
            if optimizer_step(optimizer, policy, max_grad_norm=max_grad_norm, scheduler=scheduler):
                steps += 1
            else:
                skipped += 1
    total_loss, total_learnt, total_samples = all_reduce_sum(
        [float(loss_sum), float(learnt), float(samples)], ctx, policy.device
    )
    return EpochStats(
        loss=total_loss / max(1.0, total_learnt),
        steps=steps,
        skipped_steps=skipped,
        samples=int(total_samples),
        seconds=time.perf_counter() - started,
        skipped_batches=dropped,
    )


def _every_rank_has_a_loss(loss: torch.Tensor | None, ctx: DistContext) -> bool:
    """Whether this micro-batch gets a backward: on every rank, or on none.

    Under DDP a backward all-reduces gradients, so a rank that skipped it alone
    would leave the others waiting forever. Skipping on every rank is safe: a
    DDP forward without a backward leaves no reduction pending. The vote is on
    the CPU (see :func:`~runtime.train.distributed.every_rank`).
    """
    return every_rank(loss is not None, ctx)


def _all_reduce_mean_gradients(optimizer: torch.optim.Optimizer, ctx: DistContext) -> None:
    """Average the gradients over ranks, as DDP's reducer would have done."""
    import torch.distributed as dist

    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(ctx.world_size)


def collect_predictions(
    model: nn.Module,
    loader: DataLoader,
    *,
    forward: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]],
    policy: PrecisionPolicy,
    ctx: DistContext = SINGLE_PROCESS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets of the whole set, gathered from every rank, on CPU.

    Use a loader whose sampler is :class:`~runtime.train.distributed.ShardedEvalSampler`
    under DDP, so that rows come back once each, in data set order.

    Args:
        forward: ``(model, batch) -> (prediction, target)`` for one batch.

    Returns:
        ``(pred, target)`` as float32 CPU tensors over the whole set.
    """
    import torch

    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in loader:
            batch = move_to_device(batch, policy.device)
            with policy.autocast():
                pred, target = forward(model, batch)
            preds.append(pred.float())
            targets.append(target.float())
    if preds:
        pred, target = torch.cat(preds), torch.cat(targets)
    else:  # a rank with an empty slice still takes part in the gather (shape from the others)
        pred = target = torch.zeros(0, device=policy.device)
    return gather(pred, ctx).cpu(), gather(target, ctx).cpu()


@dataclass
class FitResult:
    """Where a run left its files and what it reached."""

    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_path: Path | None = None
    last_path: Path | None = None


def fit(
    model: nn.Module,
    *,
    train_loader: DataLoader,
    compute_loss: Callable[[nn.Module, Any], torch.Tensor | None],
    evaluate: Callable[[nn.Module], dict[str, float]],
    optimizer: torch.optim.Optimizer,
    policy: PrecisionPolicy,
    epochs: int,
    out_dir: str | Path,
    select: BestTracker,
    ctx: DistContext = SINGLE_PROCESS,
    scheduler: Any = None,
    accum_steps: int = 1,
    max_grad_norm: float | None = 1.0,
    config: dict[str, Any] | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    log_keys: Sequence[str] | None = None,
) -> FitResult:
    """Train for ``epochs`` epochs; evaluate, log, checkpoint after each.

    Args:
        model: on ``policy.device``, wrapped in DDP when ``ctx.enabled``.
        train_loader: its sampler's ``set_epoch`` is called each epoch if it has one.
        compute_loss: ``(model, batch) -> mean loss``, or None to skip the batch.
        evaluate: ``model -> metrics``; runs on every rank; its keys are logged
            with a ``val_`` prefix and must include ``select.metric`` without it.
        optimizer, scheduler: the scheduler advances once per optimiser step.
        policy: precision policy (autocast dtype, GradScaler).
        epochs: total epochs, counting those done before a resume.
        out_dir: receives ``last.pt``, ``best.pt``, ``curves.csv`` (every epoch) and
            ``curves.png`` (at the end, and every epoch when epochs take 30 s or more).
        select: the selection metric (name without ``val_``) and its direction.
        config: plain values stored in checkpoints (to rebuild the model later).
        resume: a ``last.pt`` to continue from (model, optimiser, scheduler,
            scaler, epoch, history and best value are restored).
        log: where the one-line epoch summaries go (rank 0 only); default stderr.
        log_keys: the metrics (names without ``val_``) shown in those lines; default
            all. Every metric goes to ``curves.csv`` whatever this says.

    Returns:
        A :class:`FitResult`.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out_dir)
    result = FitResult(out_dir=out)
    start_epoch = step = 0
    improved_in_run = False
    if resume is not None:
        state = load_checkpoint(
            resume,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=policy.scaler,
            restore_rng=True,
        )
        start_epoch, step, select.best = state.epoch, state.step, state.best
        result.history = list(state.history)
        if ctx.is_main:
            log(f"resumed from {resume} at epoch {start_epoch}")

    for epoch in range(start_epoch + 1, epochs + 1):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a different shuffle per epoch, same on every rank
        stats = train_one_epoch(
            model,
            train_loader,
            compute_loss=compute_loss,
            optimizer=optimizer,
            policy=policy,
            ctx=ctx,
            scheduler=scheduler,
            accum_steps=accum_steps,
            max_grad_norm=max_grad_norm,
            progress=progress,
            desc=f"epoch {epoch}/{epochs}",
        )
        step += stats.steps
        metrics = evaluate(model)
        row = {"epoch": epoch, "train_loss": stats.loss}
        row.update({f"val_{k}": v for k, v in metrics.items()})
        row["samples_per_s"] = stats.samples / max(stats.seconds, 1e-9)
        result.history.append(row)
        improved = select.update(metrics)
        improved_in_run = improved_in_run or improved

        if ctx.is_main:
            common = dict(
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=policy.scaler,
                epoch=epoch,
                step=step,
                metrics=row,
                config=config,
                best=select.best,
                history=result.history,
            )
            result.last_path = save_checkpoint(out / LAST_NAME, **common)
            if improved:
                # The model, its config, metrics and provenance: resuming is last.pt's job.
                save_checkpoint(out / BEST_NAME, **common, resumable=False)
            # Drawing costs ~1-2 s: every epoch only when epochs are long, always at the end.
            write_curves(
                result.history, out, png=epoch == epochs or stats.seconds >= PNG_EVERY_EPOCH_S
            )
            shown = ", ".join(
                f"{k} {v:.4f}"
                for k, v in row.items()
                if k != "epoch"
                and (log_keys is None or k.removeprefix("val_") in log_keys or k == "train_loss")
            )
            skipped = f", {stats.skipped_steps} steps skipped" if stats.skipped_steps else ""
            if stats.skipped_batches:
                skipped += f", {stats.skipped_batches} batches without a loss"
            log(f"epoch {epoch}/{epochs}: {shown}{skipped}{' (best)' if improved else ''}")
        barrier(ctx)  # other ranks wait until the checkpoint exists

    result.best = select.best
    # best.pt is this run's only when its metric improved in this run or before
    # the resume; one left in OUT by an earlier, unrelated run is not reported.
    # Every rank answers the same (only rank 0 saved).
    resumed_best = resume is not None and select.best is not None and (out / BEST_NAME).exists()
    result.best_path = out / BEST_NAME if improved_in_run or resumed_best else None
    result.last_path = result.last_path or (out / LAST_NAME if (out / LAST_NAME).exists() else None)
    return result


def _batch_size(batch: Any) -> int:
    if hasattr(batch, "shape"):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    return 1
