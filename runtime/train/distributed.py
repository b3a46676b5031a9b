"""DDP under ``torchrun``: process group, samplers, gathering, rank-0 duties.

``torchrun --nproc_per_node N`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything here degrades to a single process (world size 1) so that the
same stack code runs in a notebook, on one GPU and on Kaggle's 2×T4.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime import constants

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset, Sampler

    from runtime.train.precision import PrecisionPolicy


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0


#: The context of a plain single-process run.
SINGLE_PROCESS = DistContext()


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set RANK and WORLD_SIZE."""
    return constants.launched_by_torchrun()


def setup_distributed(device: torch.device) -> DistContext:
    """Join the process group when started by torchrun; otherwise a single process.

    Uses nccl on CUDA and gloo on CPU. Idempotent: a second call returns the
    context of the group already running.

    Args:
        device: the device this rank computes on (``choose_device`` picks
            ``cuda:LOCAL_RANK`` under torchrun).

    Returns:
        The :class:`DistContext` of this process.
    """
    import torch
    import torch.distributed as dist

    if not launched_by_torchrun() or constants.world_size() == 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=constants.local_rank(),
    )


def start_training(device: str, precision: str, seed: int) -> tuple[PrecisionPolicy, DistContext]:
    """Where and how a training run computes, the same start for every stack.

    Picks the device and precision (``choose_precision``), joins the process group
    under torchrun (one process per GPU) and seeds every generator.

    Returns:
        The precision policy (its ``device`` is this rank's) and the process context.
    """
    from runtime.train.checkpoint import seed_everything
    from runtime.train.precision import choose_precision

    policy = choose_precision(device, precision)
    ctx = setup_distributed(policy.device)
    seed_everything(seed)
    return policy, ctx


def cleanup_distributed() -> None:
    """Leave the process group, if one is running."""
    import torch.distributed as dist

    _cpu_group.clear()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


#: A gloo group beside the default one (nccl on GPUs), made on first use: see every_rank.
_cpu_group: dict[str, object] = {}


def every_rank(flag: bool, ctx: DistContext) -> bool:
    """Whether ``flag`` is true on every rank (in a single process: ``flag``).

    The vote is a CPU collective in a gloo group of its own, so it does not
    wait for the GPU to finish the work queued so far (an nccl all-reduce read
    back to the CPU would). Every rank must call it at the same point.
    """
    if not ctx.enabled:
        return flag
    import torch
    import torch.distributed as dist

    if "group" not in _cpu_group:  # collective: every rank makes it at the same call
        _cpu_group["group"] = dist.new_group(backend="gloo")
    votes_against = torch.tensor([0 if flag else 1], dtype=torch.int32)
    dist.all_reduce(votes_against, group=_cpu_group["group"])
    return int(votes_against) == 0


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel when the run has several processes.

    The model must use every trainable parameter in its forward pass (build
    backbones without unused poolers), as DDP requires by default.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what checkpoints store)."""
    return getattr(model, "module", model)


def train_sampler(
    dataset: Dataset, ctx: DistContext, *, seed: int = 0, shuffle: bool = True
) -> Sampler | None:
    """A DistributedSampler under DDP (call ``set_epoch`` each epoch), else None.

    With None, the DataLoader shuffles by itself (pass ``shuffle=True`` there).
    """
    if not ctx.enabled:
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed
    )


class ShardedEvalSampler:
    """Evaluation sampler: each rank gets one contiguous slice, nothing duplicated.

    ``DistributedSampler`` pads the data set so that every rank has as many
    samples, which counts some samples twice in metrics. Here rank r gets
    ``[start_r, end_r)`` with slice sizes differing by at most one, so that
    concatenating the ranks' outputs in rank order restores the data set order
    (see :func:`gather`).
    """

    def __init__(self, dataset_size: int, ctx: DistContext) -> None:
        per_rank = math.ceil(dataset_size / ctx.world_size) if dataset_size else 0
        self.start = min(dataset_size, ctx.rank * per_rank)
        self.end = min(dataset_size, self.start + per_rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def gather(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank, in rank order.

    Ranks may hold different numbers of rows (the last evaluation slice is
    shorter, or empty when the set has fewer rows than ranks): rows are padded
    to the longest for ``all_gather``, then trimmed.

    Args:
        tensor: this rank's rows; same trailing shape and dtype on every rank.
        ctx: the run's context; with one process the tensor comes back as is.

    Returns:
        The rows of all ranks, on every rank.
    """
    if not ctx.enabled:
        return tensor
    import torch
    import torch.distributed as dist

    # Shapes first: rows differ between ranks, and a rank with no rows at all may
    # not know the trailing shape (it sends an empty tensor of any shape).
    shapes: list[tuple[int, ...]] = [()] * ctx.world_size
    dist.all_gather_object(shapes, tuple(tensor.shape))
    trailing = next((s[1:] for s in shapes if s and s[0] > 0), tuple(tensor.shape[1:]))
    rows = [s[0] if s else 0 for s in shapes]
    tensor = tensor.reshape(0, *trailing) if tensor.numel() == 0 else tensor.contiguous()
    padded = tensor.new_zeros((max(max(rows), 1), *trailing))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, rows, strict=True)])


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum a few numbers over ranks (loss totals and counts for logging)."""
    if not ctx.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
