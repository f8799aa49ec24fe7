"""The skeleton both training loops share (`train.train_run`, one model; `vectorize.train_seeds`,
S models stacked): how an evaluation is recorded, and how an epoch ends.

Both loops evaluate S >= 1 models at once (`forward(xb)` returns their logits, (S, B, outputs);
one run: S = 1) and record each model's numbers with its own `RunRecorder`, so a rule about
evaluations (measure.eval_subset's estimates, the last evaluation of a run) is written once here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from bnexp.config import RunConfig
from bnexp.data import Dataset
from bnexp.nn.norm import recalibrate
from bnexp.training.recorder import Clock, RunRecorder, fractional_epoch
from bnexp.training.step import estimate_on_subset, evaluate_splits, train_subset

# record(epoch, models, last=False): evaluate these models (indices into the recorders) and
# record their rows; `last` marks a run's last evaluation (always of the whole sets)
Record = Callable[..., None]


def recording(
    cfg: RunConfig,
    data: Dataset,
    forward: Callable[[Tensor], Tensor],
    module: nn.Module,
    recs: list[RunRecorder],
    clock: Clock,
    opt: Any,  # the optimizer: its lr is the row's
) -> Record:
    """The loops' `record(epoch, models, last=False)`: for each model, an evaluation of the whole
    sets (metrics.csv), or with measure.eval_subset first an estimate on the subset
    (estimates.csv), and the whole sets only for the models whose recorder asks for them."""
    tc = cfg.train
    subset = train_subset(data, cfg.measure.eval_subset)  # None: whole sets every time

    def record(epoch: float, models: list[int], last: bool = False) -> None:
        lr = opt.param_groups[0]["lr"]
        with clock.evaluating():
            if cfg.model.eval_stats == "recalibrate":  # running estimates from the training set
                recalibrate(module, data.x_train, tc.eval_batch_size, data.prepare)
            due = [s for s in models if recs[s].full_due(last)]
            rest = [s for s in models if s not in due]
            if rest:  # a subset estimate each; the whole sets for those near their target
                asked = {s: recs[s] for s in rest}
                bs = tc.eval_batch_size
                est = estimate_on_subset(forward, module, data, subset, bs, asked, epoch, lr)
                due += [s for s in rest if est[s]]
            evaluations = evaluate_splits(forward, module, data, tc.eval_batch_size) if due else []
        for s in sorted(due):
            recs[s].record(epoch, lr, evaluations[s])

    return record


def end_of_epoch(
    cfg: RunConfig, epoch: int, step: int, per_epoch: int, n_epochs: int, record: Callable
) -> bool:
    """The evaluation that closes 0-based `epoch` after `step` optimizer steps, with
    `record(epoch, last=...)`; True if the run ends here because its step budget ran out
    mid-epoch (then that evaluation, at the budget's last step, is the run's last)."""
    tc = cfg.train
    if tc.budget_spent(step) and step % per_epoch:
        record(fractional_epoch(epoch, step, per_epoch), last=True)
        return True
    record(epoch + 1, last=epoch + 1 == n_epochs or tc.budget_spent(step))
    return False
