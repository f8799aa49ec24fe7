"""What a plan costs, for `bnexp validate`: each distinct model's parameters and forward FLOPs
per example, and the plan's training FLOPs, so that a user can size a run before starting it.

FLOPs are torch.utils.flop_counter.FlopCounterMode's count of one example's eval-mode forward
(2 per multiply-add of convolutions and matrix products; BN, activations and pooling are a few
percent more and not counted). A training step costs about 3 forwards (forward, and a backward
of twice its work), so a run's training FLOPs are ≈ 3 × forward FLOPs × examples seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnexp.config import ModelConfig, PlannedRun
from bnexp.errors import BnexpError

TRAIN_FACTOR = 3  # forward + backward ≈ 3 forwards

# the model keys that change its size (BN's controls and eps do not)
_SIZE_KEYS = {"arch", "hidden", "channels", "depth", "factory", "factory_args", "norm"}


@dataclass
class ModelSize:
    label: str  # e.g. "resnet-20, norm torch"
    params: int | None  # None: the data could not be read to build it
    forward_flops: int | None  # per example
    runs: int = 0
    examples: int = 0  # examples seen in training, summed over its runs
    note: str = ""  # why the numbers are missing

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


def model_sizes(plan: list[PlannedRun]) -> list[ModelSize]:
    """One row per distinct (model, data) of the plan's distinct runs, in plan order.

    Builds each model once on one example (the data is loaded for its shape and size: a data
    set that cannot be read leaves that row's numbers empty, with the reason in `note`). A
    factory that cannot be imported or built raises its ConfigError.
    """
    from bnexp.data import load_dataset

    rows: dict[str, ModelSize] = {}
    seen: set[str] = set()
    for run in plan:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        cfg = run.config
        key = cfg.data.model_dump_json() + str(cfg.model.model_dump(include=_SIZE_KEYS))
        row = rows.get(key)
        try:
            data = load_dataset(cfg.data)
        except BnexpError as e:
            data, note = None, f"needs the data to size it ({str(e).splitlines()[0]})"
        if row is None:
            if data is None:
                row = ModelSize(_label(cfg.model), None, None, note=note)
            else:
                params, flops = _measure(cfg.model, data.input_shape, data.num_outputs)
                row = ModelSize(_label(cfg.model), params, flops)
            rows[key] = row
        row.runs += 1
        if data is not None:
            t, n = cfg.train, len(data.x_train)
            # a step budget: steps x batch (an epoch's last batch may be short); else epochs x n
            row.examples += t.steps * min(t.batch_size, n) if t.steps else t.epochs * n
    return list(rows.values())
