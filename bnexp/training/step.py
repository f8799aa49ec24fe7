"""What a training step and an evaluation are, written once for `train.train_run` (one model)
and `vectorize.train_seeds` (S models stacked): optimizer, loss, data order, evaluation, seeding.
"""

from __future__ import annotations

import math
import os
import random
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bnexp.config import TrainConfig
from bnexp.data import Dataset
from bnexp.nn.norm import BatchNorm1d, BatchNorm2d
from bnexp.training.sgd import SGD

# BN layers, torch's and ours: their affine parameters (gamma: weight, beta: bias) are decayed
# only with train.weight_decay_norm
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, BatchNorm1d, BatchNorm2d)


def norm_parameter_names(model: nn.Module) -> set[str]:
    """The names, as in model.named_parameters(), of its BN layers' gamma and beta."""
    return {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if isinstance(module, NORM_LAYERS)
        for p, _ in module.named_parameters(recurse=False)
    }


def make_optimizer(
    named_params: Iterable[tuple[str, Tensor]],
    cfg: TrainConfig,
    norm_names: Collection[str] = (),
) -> SGD | torch.optim.Optimizer:
    """SGD: bnexp's (torch.optim.SGD's numbers without importing torch._dynamo); Adam: torch's.

    train.weight_decay reaches every parameter (biases too, torch's default) except the BN
    layers' gamma and beta named in `norm_names`, which get a group of their own without it,
    unless train.weight_decay_norm (then one group, as torch.optim with plain parameters)."""
    named = list(named_params)
    params: list = [p for _, p in named]
    if cfg.weight_decay and not cfg.weight_decay_norm and any(n in norm_names for n, _ in named):
        params = [
            {"params": [p for n, p in named if n not in norm_names]},
            {"params": [p for n, p in named if n in norm_names], "weight_decay": 0.0},
        ]
    if cfg.optimizer == "sgd":
        return SGD(
            params,
            lr=cfg.lr_used,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.Adam(params, lr=cfg.lr_used, weight_decay=cfg.weight_decay)


def loss_of(logits: Tensor, y: Tensor, binary: bool) -> Tensor:
    """Mean loss only (the training step needs no accuracy: no argmax per step)."""
    if binary:
        z = logits.squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(z, y.to(z.dtype))
    return nn.functional.cross_entropy(logits, y)


def seed_losses(logits: Tensor, y: Tensor, binary: bool) -> Tensor:
    """(S,) the mean loss of each of S models on its own batch: logits (S, B, outputs), y (S, B).
    One loss_of per seed (a few microseconds each): seed s's loss is bit for bit its own run's,
    which one kernel over all seeds, summing in another order, would not be."""
    return torch.stack([loss_of(z, t, binary) for z, t in zip(logits, y, strict=True)])


def loss_and_correct(logits: Tensor, y: Tensor, binary: bool) -> tuple[Tensor, Tensor]:
    """Mean loss and number of correct predictions. Binary: logits (N, 1), threshold 0."""
    predicted = (logits.squeeze(1) > 0).long() if binary else logits.argmax(1)
    return loss_of(logits, y, binary), (predicted == y).sum()


def batches_of_epoch(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    """Index batches of one epoch: a seeded permutation cut into batch_size pieces.

    A final batch of one example is dropped: BN cannot train on one value per channel. It is
    dropped for every norm variant, so paired runs take the same steps on the same data.
    """
    perm = torch.randperm(n, generator=gen)
    chunks = list(perm.split(batch_size))
    if len(chunks[-1]) == 1 and n > 1:
        chunks.pop()
    return chunks


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return len(batches_of_epoch(n_train, batch_size, torch.Generator().manual_seed(0)))


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """module.eval() inside (BN uses its running statistics), its old mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


# Images are evaluated EVAL_CHUNK at a time, whatever train.eval_batch_size is: a conv layer's
# activations for 64 CIFAR images stay in cache. Measured (1 thread, CNN 32-64-128, eval mode):
# ~270 us/image in chunks of 32-64 channels_last images, ~1,050 us/image in one 4,096 NCHW batch.
# Only the logits are computed in chunks: the loss of each eval batch is the same function of
# them, so chunking changes rounding in the last bit at most (and nothing for vector inputs).
EVAL_CHUNK = 64


def image_layout(x: Tensor, conv: bool = True) -> Tensor:
    """A batch in the layout the CPU convolutions are fastest in: for a convolutional network
    (`conv`), images (N, C, H, W) as channels_last (the same shape and values, NHWC strides);
    anything else unchanged (an MLP's numbers stay bit for bit those of torch's default layout).
    Measured (1 thread, CNN 32-64-128 with BN, batch 128): a training step 1.4x faster; conv
    layers given a channels_last input compute and return channels_last whatever the weights'
    layout. Other devices keep torch's default layout."""
    if conv and x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def is_convolutional(module: nn.Module) -> bool:
    """bnexp's conv networks (channels_last images); a factory's network takes NCHW as given."""
    if getattr(module, "_bnexp_factory", False):
        return False
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


@torch.inference_mode()
def evaluate(
    forward: Callable[[Tensor], Tensor],
    data: Dataset,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    conv: bool = False,
) -> list[tuple[float, float]]:
    """(mean loss, accuracy) over all of x for each of S models; `forward(xb)` returns their
    logits, (S, B, outputs), for one shared batch xb (one model: S = 1). `conv`: the models are
    convolutional (their images are evaluated in chunks, channels_last)."""
    loss_sum: list[float] = []
    correct: list[int] = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if conv:  # the logits EVAL_CHUNK images at a time (see above)
            logits = torch.cat(
                [forward(image_layout(data.prepare(c))) for c in xb.split(EVAL_CHUNK)], dim=1
            )
        else:
            logits = forward(data.prepare(xb))
        if not loss_sum:
            loss_sum, correct = [0.0] * len(logits), [0] * len(logits)
        for s in range(len(logits)):
            loss, c = loss_and_correct(logits[s], yb, data.binary)
            loss_sum[s] += float(loss) * len(yb)
            correct[s] += int(c)
    return [(v / len(x), c / len(x)) for v, c in zip(loss_sum, correct, strict=True)]


class EvalSubset(NamedTuple):
    """measure.eval_subset's examples: all n (`whole`) and the first look at a quarter of them
    (`look`), each (x, y)."""

    whole: tuple[Tensor, Tensor]
    look: tuple[Tensor, Tensor]


def train_subset(data: Dataset, n: int | None) -> EvalSubset | None:
    """measure.eval_subset's examples (None when it is unset): n training examples (all if n >=
    the set), the same for every run of the data (drawn once with seed 0), in the set's order;
    and their first look."""
    if n is None:
        return None
    if n >= len(data.x_train):
        whole = data.x_train, data.y_train
    else:
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(data.x_train), generator=g)[:n].sort().values
        idx = idx.to(data.x_train.device)
        whole = data.x_train[idx], data.y_train[idx]
    return EvalSubset(whole, first_look(whole))


# measure.eval_subset's first look: this fraction of the subset, at least FIRST_LOOK_MIN
# examples. The look is the estimate unless it decides something (recorder.deciding, far_below),
# so the epochs far from an unmet target, and all after it is met, cost a quarter of the subset.
FIRST_LOOK, FIRST_LOOK_MIN = 4, 16


def first_look(subset: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """A fixed random quarter of train_subset's examples (drawn once with seed 1), in order."""
    x, y = subset
    k = min(len(x), max(FIRST_LOOK_MIN, math.ceil(len(x) / FIRST_LOOK)))
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(len(x), generator=g)[:k].sort().values.to(x.device)
    return x[idx], y[idx]


def evaluate_subset(
    forward: Callable[[Tensor], Tensor],
    module: nn.Module,
    data: Dataset,
    subset: tuple[Tensor, Tensor],
    batch_size: int,
) -> list[tuple[float, float]]:
    """Per model, (training loss, training accuracy) on `subset` (train_subset's), with `module`
    in eval mode: measure.eval_subset's estimate, as evaluate_splits does the whole sets."""
    with eval_mode(module):
        return evaluate(forward, data, *subset, batch_size, is_convolutional(module))


def estimate_on_subset(
    forward: Callable[[Tensor], Tensor],
    module: nn.Module,
    data: Dataset,
    subset: EvalSubset,
    batch_size: int,
    recs: dict,
    epoch: float,
    lr: float,
) -> dict[int, bool]:
    """measure.eval_subset's estimate for the models `recs` names (model index -> its
    RunRecorder), each recorded in its estimates.csv: a look at `subset.look`, which is
    the estimate unless it decides something (an unmet target the look is not far below); then
    the whole subset. Returns, per model, whether its whole sets are due now."""
    look = subset.look
    est = evaluate_subset(forward, module, data, look, batch_size)
    found = {
        s: (*est[s], len(look[1]))
        for s, rec in recs.items()
        if not rec.deciding() or rec.far_below(est[s][1], len(look[1]))
    }
    if len(found) < len(recs):
        est = evaluate_subset(forward, module, data, subset.whole, batch_size)
        found |= {s: (*est[s], len(subset.whole[1])) for s in recs if s not in found}
    return {s: rec.estimate(epoch, lr, *found[s]) for s, rec in recs.items()}


def evaluate_splits(
    forward: Callable[[Tensor], Tensor], module: nn.Module, data: Dataset, batch_size: int
) -> list[dict[str, float]]:
    """Per model, the four numbers of a metrics.csv row, with `module` in eval mode; six with
    a validation split (data.val_fraction): val_loss and val_acc too."""
    conv = is_convolutional(module)
    with eval_mode(module):
        train = evaluate(forward, data, data.x_train, data.y_train, batch_size, conv)
        test = evaluate(forward, data, data.x_test, data.y_test, batch_size, conv)
        val = None
        if data.x_val is not None:
            val = evaluate(forward, data, data.x_val, data.y_val, batch_size, conv)
    rows = [
        {"train_loss": tl, "train_acc": ta, "test_loss": sl, "test_acc": sa}
        for (tl, ta), (sl, sa) in zip(train, test, strict=True)
    ]
    for row, (vl, va) in zip(rows, val or [], strict=val is not None):
        row |= {"val_loss": vl, "val_acc": va}
    return rows


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed Python's, numpy's and torch's global RNGs; turn torch's deterministic algorithms on/off.

    warn_only: an op without a deterministic kernel (a few CUDA backward ops) warns instead of
    failing the run; `bnexp repro` is the check that a run really is reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device
    if deterministic:
        # cuBLAS needs it to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # torch.use_deterministic_algorithms(deterministic, warn_only=True), without its import of
    # torch._inductor.config (~1 s of torch._dynamo and Inductor at start-up, for a flag that
    # only torch.compile reads): set there only if something already imported it
    torch._C._set_deterministic_algorithms(deterministic, warn_only=True)
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = deterministic
