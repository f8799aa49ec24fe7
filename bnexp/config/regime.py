"""The training regime's config sections: data.augment and train.lr_schedule (the schema's other
regime key, train.weight_decay_norm, is a plain flag). What they do: docs/regime.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, model_validator

from bnexp.config.strict import Strict


class AugmentConfig(Strict):
    """Augmentation of each training batch of images (N, C, H, W), on the device, drawn from the
    run's data-order generator (bnexp.training.augment); evaluation never augments."""

    # random crop: zero-pad each side by this many pixels (after standardization, so the pad is
    # the mean pixel), then cut an image of the original size at a random offset; 0: no crop
    crop_padding: NonNegativeInt = 4
    hflip: bool = True  # mirror each image left-right with probability 1/2


class LrScheduleConfig(Strict):
    """The lr of each optimizer step as a fraction of lr_used (bnexp.training.schedule): a linear
    warmup from lr_used / W to lr_used over the first W = warmup_epochs x steps-per-epoch steps,
    then constant, step (x gamma at each milestone) or cosine (from lr_used towards 0 over the
    steps after the warmup: 0 would be the step after the run's last). Epochs are fractional:
    step t is at epoch t / steps per epoch, with a step budget too."""

    rule: Literal["constant", "step", "cosine"] = "constant"  # the shape after the warmup
    warmup_epochs: NonNegativeFloat = 0.0  # epochs of linear warmup (fractional; 0: none)
    milestones: list[PositiveFloat] = Field(default_factory=list)  # step: epochs, increasing
    gamma: float = Field(0.1, gt=0, le=1)  # step: the factor at each milestone

    @model_validator(mode="after")
    def _milestones_fit_rule(self) -> LrScheduleConfig:
        if self.rule == "step" and not self.milestones:
            raise ValueError("rule: step needs milestones (the epochs at which lr *= gamma)")
        if self.rule != "step" and self.milestones:
            raise ValueError(
                f"milestones: {self.milestones} apply only to rule: step (rule is {self.rule})"
            )
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"milestones: {self.milestones} must be strictly increasing")
        return self


def check_schedule(schedule: LrScheduleConfig | None, epochs: int, steps: int | None) -> None:
    """ValueError when the warmup fills an epoch budget. With a step budget the steps per epoch
    are known only to the run; a warmup longer than the budget warms up until the end."""
    if schedule is not None and steps is None and schedule.warmup_epochs >= epochs:
        raise ValueError(
            f"lr_schedule.warmup_epochs: {schedule.warmup_epochs:g} leaves no epoch of the "
            f"run's {epochs} after the warmup (expected < epochs)"
        )
