"""What a plan costs, for `bnexp validate`: each distinct model's parameters and forward FLOPs
per example, and the plan's training FLOPs, so that a user can size a run before starting it.

FLOPs are torch.utils.flop_counter.FlopCounterMode's count of one example's eval-mode forward
(2 per multiply-add of convolutions and matrix products; BN, activations and pooling are a few
percent more and not counted). A training step costs about 3 forwards (forward, and a backward
of twice its work), so a run's training FLOPs are ≈ 3 × forward FLOPs × examples seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnexp.config import DataConfig, ModelConfig, PlannedRun
from bnexp.errors import BnexpError

TRAIN_FACTOR = 3  # forward + backward ≈ 3 forwards

# the model keys that change its size (BN's controls and eps do not)
_SIZE_KEYS = {"arch", "hidden", "channels", "depth", "factory", "factory_args", "norm"}


@dataclass
class ModelSize:
    label: str  # e.g. "resnet-20, norm torch"
    params: int | None  # None: the data's shape is unknown (not on disk)
    forward_flops: int | None  # per example
    runs: int = 0
    examples: int = 0  # examples seen in training, summed over its runs

    @property
    def train_flops(self) -> int | None:
        if self.forward_flops is None:
            return None
        return TRAIN_FACTOR * self.forward_flops * self.examples


def _label(m: ModelConfig) -> str:
    what = {
        "mlp": f"mlp {m.hidden}",
        "cnn": f"cnn {m.channels}",
        "resnet": f"resnet-{m.depth}",
        "factory": f"factory {m.factory}",
    }[m.kind]
    return f"{what}, norm {m.norm}"


def _measure(m: ModelConfig, input_shape: tuple[int, ...], outputs: int) -> tuple[int, int]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bnexp.nn.models import build_model

    model = build_model(m, input_shape, outputs).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


# where the data are not on disk, datasets whose published sizes say what a model sees:
# one example's shape, classes, training images per class
_PUBLISHED = {"cifar10": ((3, 32, 32), 10, 5000)}


def _data_size(cfg: DataConfig) -> tuple[tuple[int, ...], int, int, str] | None:
    """(one example's shape, outputs, training examples, note) of a data config: read from the
    data, or from the published sizes where it is not on disk (note says so); None: unknown."""
    from bnexp.data import load_dataset

    try:
        data = load_dataset(cfg)
        return data.input_shape, data.num_outputs, len(data.x_train), ""
    except BnexpError:
        pass
    known = _PUBLISHED.get(cfg.dataset)
    if known is None or cfg.binary is not None:
        return None
    shape, classes, per_class = known
    classes = len(cfg.classes) if cfg.classes else classes
    n = (cfg.train_per_class or per_class) * classes
    return shape, classes, n, f"{cfg.dataset}: not on disk, sized from its published shape"


def model_sizes(plan: list[PlannedRun]) -> tuple[list[ModelSize], list[str]]:
    """One row per distinct (model, data) of the plan's distinct runs, in plan order, and the
    notes on how the data were sized (data not on disk).

    Builds each model once, on one example. A data set that is neither on disk nor of known
    size leaves its rows' numbers empty (a note says why). A factory that cannot be imported
    or built raises its ConfigError.
    """
    rows: dict[str, ModelSize] = {}
    sizes: dict[str, tuple | None] = {}
    notes: list[str] = []
    seen: set[str] = set()
    for run in plan:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        cfg = run.config
        data_key = cfg.data.model_dump_json()
        if data_key not in sizes:
            sizes[data_key] = _data_size(cfg.data)
            if sizes[data_key] is None:
                notes.append(f"{cfg.data.dataset}: not on disk, so its models are not sized")
            elif sizes[data_key][3]:
                notes.append(sizes[data_key][3])
        size = sizes[data_key]
        key = data_key + str(cfg.model.model_dump(include=_SIZE_KEYS))
        row = rows.get(key)
        if row is None:
            measured = (None, None) if size is None else _measure(cfg.model, *size[:2])
            row = rows[key] = ModelSize(_label(cfg.model), *measured)
        row.runs += 1
        if size is not None:
            t, n = cfg.train, size[2]
            # a step budget: steps x batch (an epoch's last batch may be short); else epochs x n
            row.examples += t.steps * min(t.batch_size, n) if t.steps else t.epochs * n
    return list(rows.values()), list(dict.fromkeys(notes))
