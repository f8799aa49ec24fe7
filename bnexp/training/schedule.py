"""train.lr_schedule: the learning rate of every optimizer step, a pure function of the step.

Step t (0-based: the t-th update, from t steps taken to t + 1) is at epoch t / steps-per-epoch.
With W = round(warmup_epochs x steps per epoch) warmup steps and T steps in the run (train.steps,
else epochs x steps per epoch), as a fraction of lr_used (train.lr after lr_scaling):

    t < W               (t + 1) / W                      linear warmup from ~0 (Goyal et al. 2017)
    constant            1
    step                gamma ** (milestones <= t / steps per epoch)   torch's MultiStepLR
    cosine              (1 + cos(pi (t - W) / (T - W))) / 2            torch's CosineAnnealingLR

Because it depends on the step alone, a resumed run continues the schedule exactly; seeds trained
together share it (they step together). The lr in metrics.csv is that of the latest step
(the first step's at step 0).
"""

from __future__ import annotations

import math
from typing import Any

from bnexp.config import TrainConfig


class LrSchedule:
    """`schedule(t)`: the lr of step t; `apply(opt, t)` sets it on every parameter group (a no-op
    without train.lr_schedule, so the optimizer keeps lr_used as it always did)."""

    def __init__(self, tc: TrainConfig, steps_per_epoch: int):
        self.base, self.rule, self.per_epoch = tc.lr_used, tc.lr_schedule, steps_per_epoch
        self.total = tc.steps if tc.steps is not None else tc.epochs * steps_per_epoch
        rule = self.rule
        self.warmup = 0 if rule is None else round(rule.warmup_epochs * steps_per_epoch)

    def __call__(self, t: int) -> float:
        rule, base = self.rule, self.base
        if rule is None:
            return base
        if t < self.warmup:
            return base * (t + 1) / self.warmup
        if rule.rule == "cosine":
            span = max(self.total - self.warmup, 1)
            return base * (1 + math.cos(math.pi * (t - self.warmup) / span)) / 2
        if rule.rule == "step":
            passed = sum(t >= m * self.per_epoch for m in rule.milestones)
            return base * rule.gamma**passed
        return base

    def apply(self, opt: Any, t: int) -> None:
        """Set step t's lr on the optimizer (torch's or bnexp's SGD: param_groups' "lr")."""
        if self.rule is not None:
            lr = self(t)
            for group in opt.param_groups:
                group["lr"] = lr
