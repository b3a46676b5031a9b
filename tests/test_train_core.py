"""The shared training core: precision, steps, accumulation, metrics, checkpoints."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from runtime.train import metrics
from runtime.train.checkpoint import BestTracker, CheckpointError, load_checkpoint, save_checkpoint
from runtime.train.curves import write_curves
from runtime.train.distributed import SINGLE_PROCESS, DistContext, ShardedEvalSampler, gather
from runtime.train.loop import collect_predictions, fit, train_one_epoch
from runtime.train.optim import build_adamw, cosine_with_warmup, freeze_all_but_last, param_groups
from runtime.train.precision import PrecisionError, choose_precision
from runtime.train.step import backward, optimizer_step


def regression_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 2, generator=g)
    return TensorDataset(x, torch.tanh(x @ w / 3))


def mse_loss(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x).float(), y)


# --- precision -------------------------------------------------------------


def test_cpu_defaults_to_fp32_without_scaler():
    policy = choose_precision("cpu")
    assert policy.name == "fp32" and policy.dtype is None and policy.scaler is None


def test_fp16_on_cpu_comes_with_a_cpu_grad_scaler():
    policy = choose_precision("cpu", "fp16")
    assert policy.dtype is torch.float16
    assert isinstance(policy.scaler, torch.amp.GradScaler)
    with policy.autocast():
        assert nn.Linear(4, 2)(torch.randn(3, 4)).dtype is torch.float16


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(PrecisionError, match="fp16"):
        choose_precision("cpu", "fp8")


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
@pytest.mark.parametrize(
    ("capability", "expected"), [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_on_cuda_follows_compute_capability_not_is_bf16_supported(
    monkeypatch, capability, expected
):
    # A T4 (sm_75) answers True to is_bf16_supported(); the policy must still pick fp16.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    policy = choose_precision(torch.device("cuda", 0), "auto")
    assert policy.name == expected
    assert (policy.scaler is not None) == (expected == "fp16")


def test_forcing_bf16_on_a_t4_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(PrecisionError, match="Tesla T4.*fp16"):
        choose_precision(torch.device("cuda", 0), "bf16")


# --- the optimiser step ----------------------------------------------------


def test_fp16_scaler_training_reduces_the_loss_on_cpu():
    torch.manual_seed(0)
    policy = choose_precision("cpu", "fp16")
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = DataLoader(regression_data(), batch_size=16, shuffle=True)
    first = train_one_epoch(
        model, loader, compute_loss=mse_loss, optimizer=optimizer, policy=policy, progress=False
    )
    for _ in range(5):
        last = train_one_epoch(
            model, loader, compute_loss=mse_loss, optimizer=optimizer, policy=policy, progress=False
        )
    assert last.loss < 0.5 * first.loss
    assert first.steps == 4 and first.skipped_steps == 0


def test_step_without_gradients_is_skipped_and_changes_nothing():
    policy = choose_precision("cpu", "fp16")
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=10)
    # A real step first, so that the optimiser and scaler have state to protect.
    with policy.autocast():
        loss = model(torch.randn(3, 4)).float().pow(2).mean()
    backward(loss, policy)
    assert optimizer_step(optimizer, policy, max_grad_norm=1.0, scheduler=scheduler)
    weights = model.weight.detach().clone()
    exp_avg = optimizer.state[model.weight]["exp_avg"].clone()
    scale, lr, sched_step = (
        policy.scaler.get_scale(),
        optimizer.param_groups[0]["lr"],
        scheduler.last_epoch,
    )

    # Nothing was backpropagated (e.g. every parameter frozen): a bare scaler raises ...
    with pytest.raises(AssertionError, match="No inf checks were recorded"):
        bare = torch.amp.GradScaler("cpu")
        bare.scale(torch.ones(()))
        bare.step(optimizer)
    # ... and optimizer_step skips cleanly instead.
    assert optimizer_step(optimizer, policy, max_grad_norm=1.0, scheduler=scheduler) is False
    assert torch.equal(model.weight, weights)
    assert torch.equal(optimizer.state[model.weight]["exp_avg"], exp_avg)
    assert policy.scaler.get_scale() == scale
    assert optimizer.param_groups[0]["lr"] == lr and scheduler.last_epoch == sched_step


def test_epoch_of_a_fully_frozen_model_skips_every_step_without_error():
    policy = choose_precision("cpu", "fp16")
    model = nn.Linear(8, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.requires_grad_(False)

    def loss_with_grad_free_model(model, batch):
        x, y = batch
        return (model(x).float() - y).pow(2).mean().requires_grad_()

    stats = train_one_epoch(
        model,
        DataLoader(regression_data(16), batch_size=8),
        compute_loss=loss_with_grad_free_model,
        optimizer=optimizer,
        policy=policy,
        progress=False,
    )
    assert stats.steps == 0 and stats.skipped_steps == 2


def test_inf_gradient_skips_the_step_and_the_schedule():
    policy = choose_precision("cpu", "fp16")
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=0, total_steps=10)
    before = model.weight.detach().clone()
    backward(model(torch.full((1, 4), float("inf"))).sum(), policy)
    assert optimizer_step(optimizer, policy, max_grad_norm=1.0, scheduler=scheduler) is False
    assert torch.equal(model.weight, before) and scheduler.last_epoch == 0


def test_clipping_bounds_the_true_gradient_norm_under_the_scaler():
    policy = choose_precision("cpu", "fp16")
    model = nn.Linear(4, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    backward(model(torch.full((1, 4), 100.0)).float().sum(), policy)
    optimizer_step(optimizer, policy, max_grad_norm=0.5)
    # SGD with lr 1: the update equals the clipped gradient (norm 0.5), not the scaled one.
    assert model.weight.norm().item() == pytest.approx(0.5, rel=1e-3)


# --- accumulation ----------------------------------------------------------


def test_two_accumulated_batches_of_four_equal_one_batch_of_eight():
    data = regression_data(8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    twin = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    twin.load_state_dict(model.state_dict())
    policy = choose_precision("cpu", "fp32")

    def one_step(net, batch_size, accum):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        grads = {}

        def capture(_opt, *args, **kwargs):
            grads.update({n: p.grad.clone() for n, p in net.named_parameters()})

        optimizer.register_step_pre_hook(capture)
        stats = train_one_epoch(
            net,
            DataLoader(data, batch_size=batch_size),
            compute_loss=mse_loss,
            optimizer=optimizer,
            policy=policy,
            accum_steps=accum,
            max_grad_norm=None,
            progress=False,
        )
        assert stats.steps == 1
        return grads

    accumulated, single = one_step(model, 4, 2), one_step(twin, 8, 1)
    for name in single:
        torch.testing.assert_close(accumulated[name], single[name], rtol=1e-5, atol=1e-6)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulation_with_a_short_tail_still_steps_at_the_end_of_the_epoch():
    model = nn.Linear(8, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_one_epoch(
        model,
        DataLoader(regression_data(24), batch_size=8),
        compute_loss=mse_loss,
        optimizer=optimizer,
        policy=choose_precision("cpu"),
        accum_steps=2,
        progress=False,
    )
    assert stats.steps == 2 and stats.samples == 24


# --- optimiser set-up ------------------------------------------------------


class TinyBackboneModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)) for _ in range(3)]
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_param_groups_give_the_backbone_a_lower_lr_and_norms_no_decay():
    model = TinyBackboneModel()
    groups = {
        g["name"]: g for g in param_groups(model, lr=1e-3, backbone_lr=1e-5, weight_decay=0.05)
    }
    assert set(groups) == {"backbone-decay", "backbone-no-decay", "head-decay", "head-no-decay"}
    assert groups["backbone-decay"]["lr"] == 1e-5 and groups["head-decay"]["lr"] == 1e-3
    assert (
        groups["head-no-decay"]["weight_decay"] == 0.0
        and groups["backbone-decay"]["weight_decay"] == 0.05
    )
    no_decay = {id(p) for p in groups["backbone-no-decay"]["params"]}
    assert id(model.backbone[0][1].weight) in no_decay and id(model.backbone[0][0].bias) in no_decay
    assert id(model.backbone[0][0].weight) not in no_decay


def test_freeze_all_but_last_keeps_only_the_last_blocks_trainable_and_out_of_the_optimizer():
    model = TinyBackboneModel()
    trainable = freeze_all_but_last(model.backbone, list(model.backbone), 1)
    assert trainable == sum(p.numel() for p in model.backbone[2].parameters())
    assert not any(p.requires_grad for p in model.backbone[0].parameters())
    optimizer = build_adamw(model, lr=1e-3)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.backbone[0][0].weight) not in in_optimizer
    assert id(model.backbone[2][0].weight) in in_optimizer
    freeze_all_but_last(model.backbone, list(model.backbone), 0)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(25):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[1] < lrs[3] < lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[-1] == pytest.approx(0.1)


# --- metrics ---------------------------------------------------------------


def numpy_ccc(x: np.ndarray, y: np.ndarray) -> float:
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_ccc_matches_lins_population_formula():
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, size=(200, 2))
    x = 0.6 * y + 0.1 + rng.normal(0, 0.3, size=y.shape)
    got = metrics.ccc(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    for d in range(2):
        assert got[d].item() == pytest.approx(numpy_ccc(x[:, d], y[:, d]), abs=1e-6)
    assert metrics.pearson(torch.tensor(x[:, 0]), torch.tensor(y[:, 0])).item() == pytest.approx(
        np.corrcoef(x[:, 0], y[:, 0])[0, 1], abs=1e-9
    )
    ss_res = ((y[:, 1] - x[:, 1]) ** 2).sum()
    assert metrics.r2(torch.tensor(x[:, 1]), torch.tensor(y[:, 1])).item() == pytest.approx(
        1 - ss_res / ((y[:, 1] - y[:, 1].mean()) ** 2).sum()
    )
    assert metrics.rmse(torch.tensor(x), torch.tensor(y))[0].item() == pytest.approx(
        math.sqrt(((x[:, 0] - y[:, 0]) ** 2).mean())
    )


def test_ccc_over_the_whole_set_differs_from_the_per_batch_average():
    # The predictions get the split between the two batches right and the order
    # inside each batch wrong: per batch CCC is -1, over the set it is high.
    y = torch.tensor([-1.0, -0.9, 0.9, 1.0])
    pred = torch.tensor([-0.9, -1.0, 1.0, 0.9])
    per_batch = (metrics.ccc(pred[:2], y[:2]) + metrics.ccc(pred[2:], y[2:])) / 2
    whole = metrics.ccc(pred, y)
    assert per_batch.item() == pytest.approx(-1.0)
    assert whole.item() == pytest.approx(
        numpy_ccc(pred.double().numpy(), y.double().numpy()), abs=1e-9
    )
    assert whole.item() > 0.9


def test_predicting_the_mean_gives_zero_ccc():
    y = torch.linspace(-1, 1, 11)
    assert metrics.ccc(torch.full_like(y, y.mean().item()), y).item() == pytest.approx(0.0)


def test_classification_report_accuracy_macro_f1_and_confusion():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = metrics.confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    report = metrics.classification_report(pred, target, 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)


# --- distributed helpers (single process; the 2-process run is in the stack tests) ---


@pytest.mark.parametrize(("n", "world"), [(10, 3), (2, 4), (9, 2), (0, 2)])
def test_eval_sampler_covers_each_sample_once_in_order(n, world):
    slices = [
        list(ShardedEvalSampler(n, DistContext(rank=r, world_size=world))) for r in range(world)
    ]
    assert sum(slices, []) == list(range(n))


def test_gather_in_a_single_process_returns_the_tensor():
    t = torch.arange(6).reshape(3, 2)
    assert gather(t, SINGLE_PROCESS) is t


def test_a_batch_without_a_loss_is_skipped_and_left_out_of_the_mean():
    policy = choose_precision("cpu", "fp32")
    model = nn.Linear(8, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    calls = []

    def every_other_batch(model, batch):
        calls.append(len(calls))
        return None if len(calls) % 2 == 0 else mse_loss(model, batch)

    stats = train_one_epoch(
        model,
        DataLoader(regression_data(32), batch_size=8),
        compute_loss=every_other_batch,
        optimizer=optimizer,
        policy=policy,
        progress=False,
    )
    assert len(calls) == 4 and stats.skipped_batches == 2
    assert stats.steps == 2 and stats.skipped_steps == 2 and stats.samples == 32
    assert stats.loss > 0  # the mean of the two real losses, not diluted by the skipped ones


def test_an_epoch_where_no_batch_has_a_loss_changes_nothing():
    policy = choose_precision("cpu", "fp16")
    model = nn.Linear(8, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_one_epoch(
        model,
        DataLoader(regression_data(16), batch_size=8),
        compute_loss=lambda model, batch: None,
        optimizer=optimizer,
        policy=policy,
        accum_steps=2,
        progress=False,
    )
    assert stats.steps == 0 and stats.skipped_steps == 1 and stats.skipped_batches == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not optimizer.state and policy.scaler.get_scale() == 2.0**16


# --- checkpoints, resume, curves ---------------------------------------------


def make_run(tmp_path, name, epochs, resume=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2))
    optimizer = build_adamw(model, lr=1e-2, is_backbone=lambda n: n.startswith("0."))
    scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=24)
    policy = choose_precision("cpu", "fp16")
    train = DataLoader(regression_data(48), batch_size=12, shuffle=True)
    val = DataLoader(regression_data(20, seed=1), batch_size=8)

    def evaluate(m):
        pred, target = collect_predictions(
            m, val, forward=lambda m, b: (m(b[0]), b[1]), policy=policy
        )
        return metrics.regression_report(pred, target)

    return model, fit(
        model,
        train_loader=train,
        compute_loss=mse_loss,
        evaluate=evaluate,
        optimizer=optimizer,
        scheduler=scheduler,
        policy=policy,
        epochs=epochs,
        out_dir=tmp_path / name,
        select=BestTracker("ccc_mean", "max"),
        config={"hidden": 16},
        resume=resume,
        progress=False,
        log=lambda line: None,
    )


def test_resume_from_last_checkpoint_continues_exactly(tmp_path):
    straight_model, straight = make_run(tmp_path, "straight", 3)
    _, first = make_run(tmp_path, "resumed", 2)
    resumed_model, resumed = make_run(tmp_path, "resumed", 3, resume=first.last_path)
    for a, b in zip(straight_model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["val_ccc_mean"] == pytest.approx(
        straight.history[-1]["val_ccc_mean"]
    )


def test_checkpoint_round_trip_keeps_weights_optimizer_and_best(tmp_path):
    model, result = make_run(tmp_path, "run", 2)
    best_epoch = max(result.history, key=lambda r: r["val_ccc_mean"])["epoch"]
    twin = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2))
    optimizer = build_adamw(twin, lr=1e-2, is_backbone=lambda n: n.startswith("0."))
    scaler = torch.amp.GradScaler("cpu")
    state = load_checkpoint(result.last_path, model=twin, optimizer=optimizer, scaler=scaler)
    assert state.epoch == 2 and state.config == {"hidden": 16}
    assert state.best == pytest.approx(max(r["val_ccc_mean"] for r in result.history))
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    assert optimizer.state_dict()["state"].keys() and scaler.get_scale() > 0
    assert load_checkpoint(result.best_path).epoch == best_epoch
    # curves next to the checkpoint
    rows = list(csv.DictReader(open(tmp_path / "run" / "curves.csv")))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2] and "val_ccc_mean" in rows[0]
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_best_pt_left_by_an_earlier_run_is_not_reported_as_this_runs_best(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = save_checkpoint(out / "best.pt", model=nn.Linear(3, 2), metrics={"ccc_mean": 0.9})
    model = nn.Linear(8, 2)
    result = fit(
        model,
        train_loader=DataLoader(regression_data(16), batch_size=8),
        compute_loss=mse_loss,
        evaluate=lambda m: {"ccc_mean": float("nan")},  # never improves
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        policy=choose_precision("cpu", "fp32"),
        epochs=2,
        out_dir=out,
        select=BestTracker("ccc_mean", "max"),
        progress=False,
        log=lambda line: None,
    )
    assert result.best is None and result.best_path is None
    assert result.last_path == out / "last.pt"
    assert load_checkpoint(stale).metrics == {"ccc_mean": 0.9}  # untouched, just not ours


def test_a_resumed_run_keeps_the_best_pt_written_before_the_resume(tmp_path):
    _, first = make_run(tmp_path, "run", 2)
    # Epoch 3 may or may not improve; either way the best of the whole run is reported.
    _, resumed = make_run(tmp_path, "run", 3, resume=first.last_path)
    assert resumed.best_path == tmp_path / "run" / "best.pt"
    assert load_checkpoint(resumed.best_path).best == pytest.approx(resumed.best)


def test_checkpoint_with_the_wrong_model_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="c.pt"):
        load_checkpoint(path, model=nn.Linear(4, 2))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_is_written_atomically(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model=nn.Linear(3, 2), metrics={"loss": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_best_tracker_ignores_nan_and_names_missing_metric():
    tracker = BestTracker("loss", "min")
    assert tracker.update({"loss": 2.0}) and not tracker.update({"loss": float("nan")})
    assert tracker.update({"loss": 1.0}) and tracker.best == 1.0
    with pytest.raises(KeyError, match="ccc"):
        BestTracker("ccc").update({"loss": 1.0})


def test_curves_csv_and_png(tmp_path):
    csv_path, png_path = write_curves(
        [
            {"epoch": 1, "train_loss": 1.0, "val_ccc": 0.1},
            {"epoch": 2, "train_loss": 0.5, "val_ccc": 0.3},
        ],
        tmp_path,
    )
    assert csv_path.read_text().splitlines()[0] == "epoch,train_loss,val_ccc"
    assert png_path.stat().st_size > 1000


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    sampler = ShardedEvalSampler(7, ctx)  # 4 rows on rank 0, 3 on rank 1
    rows = torch.tensor([[float(i), 10.0 * i] for i in sampler])
    torch.save(gather(rows, ctx), f"{out_dir}/rank{rank}.pt")
    # One row for two ranks: rank 1 has nothing, not even the trailing shape.
    tiny = torch.tensor([[1.0, 2.0, 3.0]]) if rank == 0 else torch.zeros(0)
    torch.save(gather(tiny, ctx), f"{out_dir}/tiny{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_across_two_processes_returns_every_row_once_in_order(tmp_path):
    torch.multiprocessing.spawn(
        _gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    expected = torch.tensor([[float(i), 10.0 * i] for i in range(7)])
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True), expected)
        assert torch.equal(
            torch.load(tmp_path / f"tiny{rank}.pt", weights_only=True),
            torch.tensor([[1.0, 2.0, 3.0]]),
        )


def _skip_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_or_none(model, batch):
        calls.append(None)
        # Rank 1 has nothing to learn from its 2nd micro-batch (the one that would
        # all-reduce the first step) and from its 3rd (the first of the second step).
        if rank == 1 and len(calls) in (2, 3):
            return None
        return mse_loss(model, batch)

    stats = train_one_epoch(
        model,
        DataLoader(regression_data(64, seed=rank), batch_size=8),
        compute_loss=loss_or_none,
        optimizer=optimizer,
        policy=choose_precision("cpu", "fp32"),
        ctx=ctx,
        accum_steps=2,
        progress=False,
    )
    torch.save(
        {"weights": [p.detach() for p in model.parameters()], "skipped": stats.skipped_batches,
         "steps": stats.steps},
        f"{out_dir}/skip{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.slow
def test_under_ddp_a_rank_without_a_loss_neither_hangs_nor_lets_the_ranks_drift(tmp_path):
    torch.multiprocessing.spawn(
        _skip_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    r0, r1 = (torch.load(tmp_path / f"skip{r}.pt", weights_only=True) for r in range(2))
    assert r0["skipped"] == r1["skipped"] == 2  # every rank dropped those micro-batches
    assert r0["steps"] == r1["steps"] == 4
    for a, b in zip(r0["weights"], r1["weights"], strict=True):
        torch.testing.assert_close(a, b)
