"""The experiment schema (pydantic v2, unknown keys forbidden): one `RunConfig` per run, and
`ExperimentConfig` = a run plus `sweep:`. Loading, errors and sweeps are in `bnexp.config`."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from bnexp.config.datasets import DOWNLOADS, INPUT_SHAPES, ROOT_HOLDS, SUBSET_SETS, DatasetName
from bnexp.config.model import ModelConfig, model_size_bound
from bnexp.config.model import NoisyBNConfig as NoisyBNConfig  # re-exported
from bnexp.config.regime import AugmentConfig, LrScheduleConfig, check_schedule
from bnexp.config.strict import Strict

# --------------------------------------------------------------------------- schema


# Seeds are whole numbers 0..2^32-1: scikit-learn's random_state and NumPy's legacy seeding take
# no more, and torch's generators overflow on weight-init seeds derived from larger ones
SEED_BOUND = 2**32


class BinaryConfig(Strict):
    """One class against the rest, as the course's cat vs non-cat: label 1 = positive."""

    positive: str  # the positive class's name, e.g. cat
    # negatives kept per positive image, drawn evenly from the other classes (1: balanced)
    negatives_per_positive: PositiveInt = 1

    @field_validator("positive", mode="before")
    @classmethod
    def _label_as_name(cls, v: Any) -> Any:  # positive: 3 names label 3 of data without names
        return str(v) if isinstance(v, int) else v


class DataConfig(Strict):
    dataset: DatasetName = "digits"  # digits: no download
    # the folder holding the dataset's files (docs/datasets.md names them). Relative to the cwd.
    root: str | None = None
    train: str | None = None  # npz: training file with x (N, H, W, C) or (N, D) and y (N,)
    test: str | None = None  # npz: test file, same layout as train
    # cifar10, cifar100, mnist, fashion_mnist, svhn: download into root with torchvision when the
    # files are missing (needs the internet)
    download: bool = False
    class_names: list[str] | None = (
        None  # npz: names of labels 0..K-1 (default: the file's `classes`, else "0".."K-1")
    )
    # the subset keys apply to every dataset but digits and catvnoncat (SUBSET_SETS):
    classes: list[str] | None = None  # keep only these classes, relabelled 0..k-1 in this order
    binary: BinaryConfig | None = None  # positive class vs the rest; one logit + BCE
    # images per class, drawn by `seed` (None: all). With `binary`: positives, and
    # negatives_per_positive times as many negatives spread evenly over the other classes.
    train_per_class: PositiveInt | None = None
    test_per_class: PositiveInt | None = None  # the same for the test set
    # fixes the train/test split and any subset, independent of train.seed
    seed: int = Field(0, ge=0, lt=SEED_BOUND)
    test_fraction: float = Field(0.25, gt=0, lt=1)  # digits: share held out, stratified
    # share of each class held out of training (by seed) as the validation split; null: none
    val_fraction: float | None = Field(None, gt=0, lt=1)
    # with training statistics: per feature (digits, npz vectors) or per channel (images)
    standardize: bool = True
    augment: AugmentConfig | None = None  # crop + flip of each training batch; null: off

    @field_validator("classes", "class_names", mode="before")
    @classmethod
    def _labels_as_names(cls, v: Any) -> Any:  # classes: [3, 5] names labels 3 and 5 ("3", "5")
        return [str(n) if isinstance(n, int) else n for n in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _keys_fit_dataset(self) -> DataConfig:
        applies_to = {  # key -> the datasets it applies to
            "root": tuple(ROOT_HOLDS),
            "train": ("npz",),
            "test": ("npz",),
            "download": DOWNLOADS,
            "class_names": ("npz",),
            "classes": SUBSET_SETS,
            "binary": SUBSET_SETS,
            "train_per_class": SUBSET_SETS,
            "test_per_class": SUBSET_SETS,
        }
        problems = []
        for key, datasets in applies_to.items():
            value = getattr(self, key)
            if value not in (None, False) and self.dataset not in datasets:
                names = ", ".join(datasets[:-1]) + " or " * (len(datasets) > 1) + datasets[-1]
                problems.append(
                    f"data.{key} applies only to dataset {names} (dataset is {self.dataset})"
                )
        if self.dataset in ROOT_HOLDS and not self.root:
            problems.append(
                f"dataset {self.dataset} needs data.root (the folder holding "
                f"{ROOT_HOLDS[self.dataset]})"
            )
        if self.dataset == "npz":
            for key in ("train", "test"):
                if not getattr(self, key):
                    problems.append(
                        f"dataset npz needs data.{key} (the path of an .npz file holding x and y)"
                    )
        for key in ("classes", "class_names"):
            names = getattr(self, key) or []
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                problems.append(f"data.{key} lists {', '.join(dup)} more than once")
        if self.classes is not None and len(self.classes) < 2:
            problems.append("data.classes needs at least 2 classes")
        if self.binary and self.classes and self.binary.positive not in self.classes:
            problems.append(
                f"data.binary.positive {self.binary.positive!r} is not in data.classes "
                f"{self.classes}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class LrScalingConfig(Strict):
    """The learning rate as a function of the mini-batch size, for batch-size studies:
    lr_used = train.lr * (batch_size / base_batch_size) ** p, with p = 1 for linear (Goyal et al.
    2017) and 1/2 for sqrt (Hoffer et al. 2017); none keeps train.lr at every batch size."""

    rule: Literal["none", "linear", "sqrt"] = "none"  # p = 1 (linear), 1/2 (sqrt); none: lr as is
    base_batch_size: PositiveInt = 64  # the batch size at which train.lr is used as written


class TrainConfig(Strict):
    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd: bnexp's own (torch.optim.SGD's update)
    lr: PositiveFloat = 0.1  # at lr_scaling.base_batch_size when lr_scaling is set
    lr_scaling: LrScalingConfig | None = None  # null: train.lr at every batch size
    momentum: float = Field(0.0, ge=0, lt=1)  # SGD momentum (torch's convention)
    nesterov: bool = False  # Nesterov momentum (needs sgd and momentum > 0)
    weight_decay: NonNegativeFloat = 0.0  # L2 penalty added to the gradient (torch's)
    weight_decay_norm: bool = False  # decay BN's gamma/beta too (false: all but them)
    lr_schedule: LrScheduleConfig | None = None  # the lr per step; null: lr_used throughout
    batch_size: PositiveInt = 64  # examples per optimizer step (a last batch of 1 is dropped)
    epochs: PositiveInt = 10  # passes over the training set
    # the budget in optimizer steps instead of epochs (the last epoch cut short), so that a
    # batch-size sweep can hold the number of updates fixed; null: train.epochs whole epochs
    steps: PositiveInt | None = None
    # initial weights and data order; shared by every norm variant (paired runs)
    seed: int = Field(0, ge=0, lt=SEED_BOUND)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available, else cpu
    eval_batch_size: PositiveInt = 4096  # examples per forward pass when evaluating
    eval_every_steps: PositiveInt | None = None  # extra evaluations between epoch ends
    # a resumable checkpoint every N epochs (model, optimizer, data order, metrics so far);
    # 0 = never.
    # Each costs a torch.save: on tiny models (a second per run) every epoch adds ~20%.
    checkpoint_every: NonNegativeInt = 5
    # stop early, recorded as diverged, when a training step's loss is NaN/inf (always) or above a
    # limit: a number is that loss; "<k>x" is k times the first evaluation's training loss;
    # null (the default) means "100x"; off (or false) checks NaN/inf only. The default is null,
    # not "100x", so that configs written before it existed keep their run ids.
    diverge_loss: float | str | None = None
    # seed every RNG and use torch's deterministic algorithms: same config -> same metrics.csv bytes
    deterministic: bool = True
    # train the runs of one sweep cell that differ only in train.seed as one batched model
    # (bnexp.training.vectorize); each run's results equal a separate run's. Falls back, with a log
    # line, where a model or option cannot be vectorized. Not part of the run id.
    vectorize_seeds: bool = False

    @field_validator("diverge_loss", mode="before")
    @classmethod
    def _diverge_limit(cls, v: Any) -> float | str | None:
        """A loss > 0, "<k>x" with k > 0, off/false (YAML reads off as false), or null."""
        if v is None or v is False or v == "off":
            return None if v is None else "off"
        factor = v[:-1] if isinstance(v, str) and v.endswith("x") else None
        try:
            number = float(v if factor is None else factor) if v is not True else 0.0
        except (TypeError, ValueError):
            number = 0.0
        if not number > 0:
            raise ValueError(
                "expected a loss > 0, '<k>x' (k > 0 times the first evaluation's training "
                "loss), off, or null (= 100x)"
            )
        return f"{number:g}x" if factor is not None else number

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs optimizer: sgd and momentum > 0")
        if self.steps is not None and "epochs" in self.model_fields_set:
            raise ValueError(
                f"epochs: {self.epochs} and steps: {self.steps} are two budgets; give one "
                "(steps counts optimizer steps, epochs whole passes over the training set)"
            )
        check_schedule(self.lr_schedule, self.epochs, self.steps)
        return self

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Epochs the run starts: train.epochs, or with a step budget as many as its steps need
        (the last one cut short)."""
        if self.steps is None:
            return self.epochs
        return -(-self.steps // steps_per_epoch)

    def budget_spent(self, step: int) -> bool:
        """True once `step` optimizer steps use up a step budget (never for an epoch budget)."""
        return self.steps is not None and step >= self.steps

    @property
    def lr_used(self) -> float:
        """The optimizer's learning rate at this batch size (train.lr scaled by lr_scaling)."""
        scaling = self.lr_scaling
        if scaling is None or scaling.rule == "none":
            return self.lr
        power = 1.0 if scaling.rule == "linear" else 0.5
        return self.lr * (self.batch_size / scaling.base_batch_size) ** power


class TargetConfig(Strict):
    metric: Literal["train_acc", "test_acc", "train_loss", "test_loss"] = "train_acc"  # watched
    value: float  # accuracies: reached when >= value; losses: reached when <= value


class ShiftProbeConfig(Strict):
    """Ioffe & Szegedy Fig. 1: percentiles of the inputs to one layer's nonlinearity, on a
    fixed batch."""

    layer: PositiveInt = 1  # hidden layer l, 1-based (model.blocks[l-1]); must exist in the model
    every_steps: PositiveInt = 10  # probe at step 0 and after every k optimizer steps
    units: list[NonNegativeInt] = Field(default_factory=lambda: [0, 1, 2])  # kept one by one
    # examples in the fixed probe batch (drawn once, the same for every run)
    probe_size: PositiveInt = 256


class IcsConfig(Strict):
    """Santurkar et al. 2018, Def. 2.1: how much layer l's gradient moves when earlier layers
    step."""

    layer: int = Field(2, ge=2)  # hidden layer l, 1-based; >= 2 so that earlier layers exist
    every_steps: PositiveInt = 10  # measure on the batch of every k-th optimizer step


class BatchStatNoiseConfig(Strict):
    """Spread of mini-batch means / variances around full-training-set statistics, at each BN
    layer."""

    batch_sizes: list[int] = Field(default_factory=lambda: [4, 8, 16, 32, 64, 128, 256])  # >= 2
    samples: PositiveInt = 200  # random mini-batches (drawn without replacement) per batch size

    @model_validator(mode="after")
    def _sizes_at_least_two(self) -> BatchStatNoiseConfig:
        if not self.batch_sizes or min(self.batch_sizes) < 2:
            raise ValueError(
                "batch_sizes must be a non-empty list of sizes >= 2 (a batch variance needs 2 "
                "values)"
            )
        return self


class MeasureConfig(Strict):
    target: TargetConfig | None = None  # speed-up = steps until it is first met
    # Evaluation off the critical path: between the whole-set evaluations (metrics.csv: the first,
    # the last, and each one whose estimate is near the target until the whole training set
    # meets it), the training accuracy is estimated on this many training examples, the same
    # for every run (estimates.csv). null: the whole train and test sets at every
    # evaluation. Needs a train_acc target or none (the estimate is of training accuracy).
    eval_subset: PositiveInt | None = None
    shift_probe: ShiftProbeConfig | None = (
        None  # covariate shift -> runs/<id>/probes.csv (site z, z_tilde)
    )
    ics: IcsConfig | None = None  # internal covariate shift -> runs/<id>/probes.csv (site ics)
    bn_noise: BatchStatNoiseConfig | None = None  # at the end of training -> runs/<id>/bn_noise.csv
    # final train acc at which the report counts an arm as fitted (report only: no run id)
    fit: float = Field(0.97, gt=0, le=1)

    @model_validator(mode="after")
    def _subset_estimates_training_accuracy(self) -> MeasureConfig:
        if self.eval_subset is not None and self.target and self.target.metric != "train_acc":
            raise ValueError(
                f"eval_subset: {self.eval_subset} with target metric {self.target.metric}: the "
                "subset estimates training accuracy, which decides when the whole sets are "
                "evaluated (expected target metric train_acc, or eval_subset: null)"
            )
        return self


class RunConfig(Strict):
    """Everything one run needs; a run is a pure function of it."""

    # the results folder's name: a file name, so at most NAME_MAX (255) bytes; 128 leaves room
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    data: DataConfig = Field(default_factory=DataConfig)  # the data set, its split and subsets
    model: ModelConfig = Field(default_factory=ModelConfig)  # the network and its normalization
    train: TrainConfig = Field(default_factory=TrainConfig)  # optimizer, budget, seed, device
    measure: MeasureConfig = Field(default_factory=MeasureConfig)  # target, probes, ICS, BN noise

    @model_validator(mode="after")
    def _probed_layers_exist(self) -> RunConfig:
        probes = [k for k in ("shift_probe", "ics", "bn_noise") if getattr(self.measure, k)]
        if probes and self.model.kind not in ("mlp", "cnn"):
            raise ValueError(
                f"measure.{probes[0]}: probes hidden layers by index (model.blocks), which only "
                f"arch mlp and cnn have (found {self.model.kind}); remove it"
            )
        widths = self.model.hidden if self.model.arch == "mlp" else self.model.channels
        probe, ics = self.measure.shift_probe, self.measure.ics
        if probe is not None and probe.layer > len(widths):
            raise ValueError(
                f"measure.shift_probe.layer: {probe.layer} is beyond the model's {len(widths)} "
                "hidden layers"
            )
        if probe is not None and probe.units and max(probe.units) >= widths[probe.layer - 1]:
            raise ValueError(
                f"measure.shift_probe.units: unit {max(probe.units)} does not exist in hidden "
                "layer "
                f"{probe.layer} ({widths[probe.layer - 1]} units, numbered from 0)"
            )
        if ics is not None and ics.layer > len(widths):
            raise ValueError(
                f"measure.ics.layer: {ics.layer} is beyond the model's {len(widths)} hidden layers"
            )
        return self

    @model_validator(mode="after")
    def _bn_needs_two_examples(self) -> RunConfig:
        if self.model.norm != "none" and self.train.batch_size < 2:
            raise ValueError(
                f"train.batch_size: {self.train.batch_size} with norm: {self.model.norm}: a "
                "batch's "
                "variance needs at least 2 examples (expected batch_size >= 2, or norm: none)"
            )
        return self

    @model_validator(mode="after")
    def _fits_in_memory(self) -> RunConfig:
        need, limit = memory_lower_bound(self), physical_memory()
        if limit is not None and need > limit:
            key = {"mlp": "model.hidden", "cnn": "model.channels"}.get(self.model.kind, "model")
            raise ValueError(
                f"{key}: this model needs at least {need / 2**30:,.1f} GiB (float32 weights, "
                f"gradients, optimizer state and one batch of its widest layer), more than this "
                f"machine's {limit / 2**30:,.1f} GiB of memory; expected smaller widths"
            )
        return self


class MlflowTrackConfig(Strict):
    tracking_uri: str | None = None  # None: sqlite:///<out>/<name>/mlflow.db, beside the results
    experiment: str | None = None  # the MLflow experiment; None: the experiment's name


class TrackConfig(Strict):
    """Where finished runs are also logged (bnexp.track). Not part of any run id."""

    mlflow: MlflowTrackConfig | None = None  # `mlflow: true` for the defaults
    tensorboard: bool = False  # event files under <out>/<name>/tensorboard/<run_id>/

    @field_validator("mlflow", mode="before")
    @classmethod
    def _mlflow_switch(cls, v: Any) -> Any:
        return {} if v is True else None if v is False else v


class ExperimentConfig(RunConfig):
    sweep: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values
    # how finished runs are also logged (MLflow, TensorBoard): not what they compute, no run id
    track: TrackConfig = Field(default_factory=TrackConfig)


def memory_lower_bound(cfg: RunConfig) -> int:
    """Bytes a run needs at least: float32 parameters with their gradients and optimizer state,
    plus the widest layer's activations for one (training or evaluation) batch. A lower bound
    (one output, no other activations): what it refuses can never fit."""
    c, h, w = INPUT_SHAPES.get(cfg.data.dataset, (1, 1, 1))
    params, widest = model_size_bound(cfg.model, (c, h, w))
    t = cfg.train
    state = 2 if t.optimizer == "adam" else 1 if t.momentum > 0 else 0
    batch = max(t.batch_size, t.eval_batch_size)
    return 4 * (params * (2 + state) + batch * widest)


def physical_memory() -> int | None:
    """This machine's memory in bytes; None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
