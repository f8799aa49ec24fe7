"""The literature's training regime as config: data.augment (crop + flip), train.lr_schedule and
train.weight_decay_norm, against hand computations and torch's own schedulers and optimizers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from run_checks import assert_same_run
from torch import nn
from torch.nn import functional as F

from bnexp.config import AugmentConfig, RunConfig, TrainConfig
from bnexp.data import Dataset
from bnexp.errors import DataError
from bnexp.nn.models import build_model
from bnexp.results import CHECKPOINT
from bnexp.training.augment import augment, crop_flip, draw
from bnexp.training.recorder import RunInterrupted
from bnexp.training.schedule import LrSchedule
from bnexp.training.sgd import SGD
from bnexp.training.step import make_optimizer, norm_parameter_names
from bnexp.training.train import train_run
from bnexp.training.vectorize import train_seeds

# ---------------------------------------------------------------------------- data.augment


def test_crop_and_flip_of_a_small_image_by_hand():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    # padded by 1 (5 x 5), cut at row 0, column 2: the top pad row, then columns 1..2 and pad
    shifted = crop_flip(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([False]), 1)
    assert shifted.tolist() == [[[[0, 0, 0], [2, 3, 0], [5, 6, 0]]]]
    flipped = crop_flip(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([True]), 1)
    assert flipped.tolist() == [[[[0, 0, 0], [0, 3, 2], [0, 6, 5]]]]
    # offset (padding, padding) and no flip: the image itself
    same = crop_flip(x, torch.tensor([1]), torch.tensor([1]), torch.tensor([False]), 1)
    assert torch.equal(same, x)


def test_crop_flip_of_a_batch_equals_slicing_each_image():
    """The one-gather batch version against a per-image reference (pad, slice, torch.flip)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 5, 7, generator=g)
    dy, dx, flip = draw(AugmentConfig(crop_padding=2, hflip=True), 6, g)
    got = crop_flip(x, dy, dx, flip, 2)
    padded = F.pad(x, (2, 2, 2, 2))
    for n in range(6):
        ref = padded[n, :, dy[n] : dy[n] + 5, dx[n] : dx[n] + 7]
        ref = ref.flip(-1) if flip[n] else ref
        assert torch.equal(got[n], ref), n
    assert got.shape == x.shape and flip.any() and not flip.all()  # both cases exercised


def test_augment_draws_from_each_generator_in_turn():
    """Seeds trained together: the g-th block of images uses gens[g]'s draws, as its own run."""
    x = torch.randn(8, 1, 4, 4)
    cfg = AugmentConfig(crop_padding=1, hflip=True)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both = augment(cfg, x, gens)
    for s, block in ((3, slice(0, 4)), (4, slice(4, 8))):
        alone = augment(cfg, x[block], [torch.Generator().manual_seed(s)])
        assert torch.equal(both[block], alone)
    assert augment(None, x, gens) is x


def _cfg(**sections) -> RunConfig:
    base = {
        "model": {"hidden": [16], "activation": "relu", "norm": "torch"},
        "train": {
            "lr": 0.1,
            "momentum": 0.9,
            "batch_size": 64,
            "epochs": 4,
            "seed": 0,
            "checkpoint_every": 1,
            "device": "cpu",
        },
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return RunConfig.model_validate(base)


AUGMENT = {"augment": {"crop_padding": 2, "hflip": True}}
COSINE = {"lr_schedule": {"rule": "cosine", "warmup_epochs": 1}}
STEP = {"rule": "step", "milestones": [1.4, 3]}


def test_augmented_runs_are_reproducible_byte_for_byte(tmp_path, small_digits):
    cfg = _cfg(data=AUGMENT)
    train_run(cfg, tmp_path / "a", data=small_digits)
    train_run(cfg, tmp_path / "b", data=small_digits)
    train_run(_cfg(), tmp_path / "plain", data=small_digits)
    a, b = ((tmp_path / d / "metrics.csv").read_bytes() for d in ("a", "b"))
    assert a == b
    plain = pd.read_csv(tmp_path / "plain" / "metrics.csv")
    aug = pd.read_csv(tmp_path / "a" / "metrics.csv")
    # evaluation never augments: before any step the two runs are one model on the same data
    assert aug.iloc[0].equals(plain.iloc[0])
    assert aug.train_loss.iloc[-1] != plain.train_loss.iloc[-1]  # the training batches differ


def test_augment_of_vectors_is_a_one_line_error_before_anything_is_written(tmp_path):
    x = torch.randn(40, 5)
    y = torch.arange(40) % 2
    data = Dataset("vectors", x, y, x[:8], y[:8], ("a", "b"))
    with pytest.raises(DataError, match=r"data.augment: vectors's training inputs are \(40, 5\)"):
        train_run(_cfg(data=AUGMENT), tmp_path / "run", data=data)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- train.lr_schedule


def _torch_lrs(scheduler_cls, n: int, **kwargs) -> list[float]:
    """The lr torch's scheduler gives after 0, 1, ..., n-1 calls of scheduler.step()."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = scheduler_cls(opt, **kwargs)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_equals_torchs_cosine_annealing_per_step():
    tc = TrainConfig(lr=0.4, steps=50, lr_schedule={"rule": "cosine"})
    ours = LrSchedule(tc, steps_per_epoch=7)
    ref = _torch_lrs(torch.optim.lr_scheduler.CosineAnnealingLR, 50, T_max=50)
    torch.testing.assert_close([ours(t) for t in range(50)], ref, rtol=1e-12, atol=1e-12)


def test_warmup_then_cosine_over_the_steps_after_it():
    """Warmup by hand ((t + 1) / W of the lr), then torch's cosine over the remaining steps;
    lr_scaling scales the base (linear: batch 128 at base 64 doubles train.lr)."""
    tc = TrainConfig(
        lr=0.2,
        batch_size=128,
        lr_scaling={"rule": "linear", "base_batch_size": 64},
        epochs=5,
        lr_schedule={"rule": "cosine", "warmup_epochs": 1.5},
    )
    ours = LrSchedule(tc, steps_per_epoch=4)  # 20 steps, W = 6
    torch.testing.assert_close([ours(t) for t in range(6)], [0.4 * (t + 1) / 6 for t in range(6)])
    ref = _torch_lrs(torch.optim.lr_scheduler.CosineAnnealingLR, 14, T_max=14)
    torch.testing.assert_close([ours(t) for t in range(6, 20)], ref, rtol=1e-12, atol=1e-12)


def test_step_rule_equals_torchs_multistep_at_every_step_of_each_epoch():
    per_epoch = 5
    tc = TrainConfig(lr=0.4, epochs=8, lr_schedule={"rule": "step", "milestones": [2, 5]})
    ours = LrSchedule(tc, per_epoch)
    ref = _torch_lrs(torch.optim.lr_scheduler.MultiStepLR, 8, milestones=[2, 5], gamma=0.1)
    for t in range(8 * per_epoch):  # torch's stepped once an epoch: every step of epoch e
        torch.testing.assert_close(ours(t), ref[t // per_epoch], rtol=1e-12, atol=1e-12)


def test_no_schedule_leaves_the_optimizer_alone():
    tc = TrainConfig(lr=0.3)
    opt = SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    LrSchedule(tc, 4).apply(opt, 17)
    assert opt.param_groups[0]["lr"] == 0.3 and LrSchedule(tc, 4)(17) == 0.3


def test_the_schedules_lr_is_in_metrics_csv(tmp_path, small_digits):
    """Each row's lr is its latest step's (row 0: the first step's); cosine falls to near 0."""
    cfg = _cfg(train={"eval_every_steps": 2, **COSINE})
    train_run(cfg, tmp_path / "run", data=small_digits)
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    sched = LrSchedule(cfg.train, steps_per_epoch=5)  # 300 examples, batch 64
    expected = [sched(max(step - 1, 0)) for step in m.step]
    torch.testing.assert_close(m.lr.tolist(), expected, rtol=1e-12, atol=0)
    after_warmup = m[m.step >= 5].lr
    # the last of 15 cosine steps: (1 + cos(14 pi / 15)) / 2 = 1.1% of the lr
    assert after_warmup.is_monotonic_decreasing and after_warmup.iloc[-1] < 0.02 * m.lr.max()


def _interrupted_after(cfg: RunConfig, run_dir, data, epochs: int) -> None:
    done = [0]
    with pytest.raises(RunInterrupted):
        train_run(
            cfg,
            run_dir,
            data=data,
            on_progress=lambda e, _: done.__setitem__(0, e),
            should_stop=lambda: done[0] >= epochs,
        )
    assert (run_dir / CHECKPOINT).exists()


@pytest.mark.parametrize(
    "sections",
    [{"train": COSINE}, {"data": AUGMENT, "train": {"lr_schedule": STEP}}],
    ids=["cosine", "step+augment"],
)
def test_an_interrupted_run_resumes_its_schedule_exactly(tmp_path, small_digits, sections):
    """Interrupted after epoch 2 and resumed: the bytes of a run never interrupted."""
    cfg = _cfg(**sections)
    train_run(cfg, tmp_path / "whole", data=small_digits)
    _interrupted_after(cfg, tmp_path / "run", small_digits, epochs=2)
    again = train_run(cfg, tmp_path / "run", data=small_digits)
    assert again.resumed_from_epoch == 2
    whole = (tmp_path / "whole" / "metrics.csv").read_bytes()
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == whole
    assert len(set(pd.read_csv(tmp_path / "run" / "metrics.csv").lr)) > 2


def test_seeds_trained_together_follow_the_schedule_and_augment(tmp_path, small_digits):
    """Vectorized seeds: the same lr column and (within rounding) the same run as separate runs."""
    cfgs = [
        _cfg(
            model={"hidden": [16], "norm": "none"},
            data=AUGMENT,
            train={"seed": s, "epochs": 2, **COSINE},
        )
        for s in (0, 1)
    ]
    train_seeds(cfgs, [tmp_path / f"v{c.train.seed}" for c in cfgs], data=small_digits)
    for c in cfgs:
        train_run(c, tmp_path / f"s{c.train.seed}", data=small_digits)
        assert_same_run(tmp_path / f"s{c.train.seed}", tmp_path / f"v{c.train.seed}")
        sep, vec = (pd.read_csv(tmp_path / f"{k}{c.train.seed}" / "metrics.csv") for k in "sv")
        assert sep.lr.tolist() == vec.lr.tolist()


# ---------------------------------------------------------------------------- weight decay


def _bn_model() -> nn.Module:
    cfg = RunConfig.model_validate({"model": {"hidden": [6], "norm": "torch"}})
    torch.manual_seed(0)
    model = build_model(cfg.model, (4,), 3)
    for p in model.parameters():  # gamma and beta away from 1 and 0
        with torch.no_grad():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("decay_norm", [False, True])
def test_weight_decay_reaches_bn_only_when_asked(decay_norm):
    """One SGD step by hand: p - lr * (grad + wd * p) for decayed parameters (every weight and
    bias), p - lr * grad for BN's gamma and beta unless train.weight_decay_norm."""
    lr, wd = 0.1, 0.5
    model = _bn_model()
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    tc = TrainConfig(lr=lr, weight_decay=wd, weight_decay_norm=decay_norm)
    norm = norm_parameter_names(model)
    assert norm == {"blocks.0.norm.weight", "blocks.0.norm.bias"}
    opt = make_optimizer(model.named_parameters(), tc, norm)
    F.cross_entropy(model(x), y).backward()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        w, g = before[name]
        decayed = decay_norm or name not in norm
        expected = w - lr * (g + wd * w) if decayed else w - lr * g
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=name)


def test_adam_gets_the_same_groups():
    model = _bn_model()
    tc = TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.1)
    opt = make_optimizer(model.named_parameters(), tc, norm_parameter_names(model))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert len(opt.param_groups[1]["params"]) == 2
    one = make_optimizer(model.named_parameters(), TrainConfig(lr=0.01, weight_decay=0.0), {"x"})
    assert len(one.param_groups) == 1  # no weight decay: one group, as before


def test_sgd_with_groups_equals_torch_sgd_and_their_state_dicts_load_into_each_other():
    ours, ref = _bn_model(), _bn_model()

    def groups(model):
        norm = norm_parameter_names(model)
        named = list(model.named_parameters())
        return [
            {"params": [p for n, p in named if n not in norm]},
            {"params": [p for n, p in named if n in norm], "weight_decay": 0.0, "lr": 0.05},
        ]

    opt = SGD(groups(ours), lr=0.1, momentum=0.9, weight_decay=0.01)
    opt_ref = torch.optim.SGD(groups(ref), lr=0.1, momentum=0.9, weight_decay=0.01)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        for model, o in ((ours, opt), (ref, opt_ref)):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b), (a - b).abs().max()
    back = torch.optim.SGD(groups(_bn_model()), lr=1.0, momentum=0.1)
    back.load_state_dict(opt.state_dict())
    again = SGD(groups(_bn_model()), lr=1.0)
    again.load_state_dict(opt_ref.state_dict())
    assert [g["lr"] for g in again.param_groups] == [0.1, 0.05]
    for b1, b2 in zip(again.buffers, opt.buffers, strict=True):
        assert torch.equal(b1, b2)
    assert math.isclose(back.param_groups[1]["lr"], 0.05)


def test_run_with_augment_on_vector_data_prints_one_line_and_exits_2(tmp_path):
    """bnexp run checks data.augment against the loaded data before any run starts."""
    from typer.testing import CliRunner

    from bnexp.cli import app

    g = np.random.default_rng(0)
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", x=g.normal(size=(40, 5)), y=np.arange(40) % 2)
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"name: vec\ndata: {{dataset: npz, train: {tmp_path / 'train.npz'}, "
        f"test: {tmp_path / 'test.npz'}, augment: {{hflip: true}}}}\ntrain: {{epochs: 1}}\n"
    )
    result = CliRunner().invoke(app, ["run", str(exp), "--out", str(tmp_path / "results")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "data.augment: " in result.output and "not images (N, C, H, W)" in result.output
    runs = tmp_path / "results" / "vec" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
