"""Measurements taken inside a run: covariate shift, internal covariate shift and BN noise.

Layers are numbered like the lecture: hidden layer l (1-based) is `model.blocks[l-1]`. Its
nonlinearity's input is `block.weight`'s output z before BN and `block.norm`'s output z~ after
it (pre_activation placement; with post_activation, z~ is BN's output after the nonlinearity).

- Covariate shift (Ioffe & Szegedy 2015, Fig. 1): on a fixed probe batch, every k steps, the
  15/50/85th percentiles, mean and std of z (and z~ for BN variants) for a few fixed units and
  averaged over all units, plus the drift: the mean over units of |change| of p50 and std since
  the previous probe. Site "z" is recorded for every variant, "z_tilde" only where there is BN.
- ICS (Santurkar et al. 2018, Def. 2.1): G = grad of layer l's weight on the step's batch;
  G' = the same gradient after the layers before l took this step's update (layers >= l kept
  at their old values), computed on a copy so that training is untouched.
- BN noise: at each BN layer, the spread of mini-batch means and variances of its input around
  the full-training-set statistics, per batch size (sampling without replacement, as training
  does); in units of the full-data std, so the mean's noise is 1/sqrt(m) up to the
  finite-population factor sqrt((N - m) / (N - 1)).

Probes never change training: they run under `torch.no_grad` or on a copy, save and restore BN
buffers, and fork the RNG.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from bnexp.config import BatchStatNoiseConfig, IcsConfig, RunConfig, ShiftProbeConfig
from bnexp.errors import BnexpError
from bnexp.io import atomic_write_csv
from bnexp.results import BN_NOISE, PROBES, ResultsFolder

PROBE_COLUMNS = [
    "step",
    "layer",
    "site",
    "unit",
    "p15",
    "p50",
    "p85",
    "mean",
    "std",  # covariate shift
    "drift_p50",
    "drift_std",  # site z/z_tilde, unit "all": mean over units of |change| since the last probe
    "ics_l2",
    "ics_cos",
    "grad_norm",  # site "ics": ||G - G'||_2, cos(G, G'), ||G||_2
]
NOISE_COLUMNS = [
    "layer",
    "batch_size",
    "samples",
    "channels",
    "n_train",
    "mean_noise",
    "var_noise",
    "expected_mean_noise",
]
QUANTILES = (0.15, 0.50, 0.85)


def has_bn(block: nn.Module) -> bool:
    return not isinstance(block.norm, nn.Identity)


def _forked_rng(device: torch.device):
    """Probes' random draws (e.g. a noisy norm's) must not move training's random streams."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


# --------------------------------------------------------------------------- covariate shift


def unit_values(t: Tensor) -> Tensor:
    """(N, C) or (N, C, H, W) -> (C, N*H*W): each unit's (channel's) values as one row."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def unit_stats(t: Tensor) -> dict[str, Tensor]:
    """Per unit: p15, p50, p85 (linear interpolation, numpy's default), mean, std (ddof 0);
    each (C,)."""
    v = unit_values(t.detach()).double()
    q = torch.quantile(v, torch.tensor(QUANTILES, dtype=v.dtype, device=v.device), dim=1)  # (3, C)
    return {"p15": q[0], "p50": q[1], "p85": q[2], "mean": v.mean(1), "std": v.std(1, correction=0)}


def shift_rows(
    step: int,
    layer: int,
    site: str,
    stats: dict[str, Tensor],
    units: list[int],
    previous: dict[str, Tensor] | None,
) -> list[dict]:
    """probes.csv rows for one site: one per fixed unit, and unit "all" (the average over units)."""
    rows = []
    for u in units:
        rows.append(
            {
                "step": step,
                "layer": layer,
                "site": site,
                "unit": str(u),
                **{k: float(v[u]) for k, v in stats.items()},
            }
        )
    avg = {
        "step": step,
        "layer": layer,
        "site": site,
        "unit": "all",
        **{k: float(v.mean()) for k, v in stats.items()},
    }
    if previous is not None:
        avg["drift_p50"] = float((stats["p50"] - previous["p50"]).abs().mean())
        avg["drift_std"] = float((stats["std"] - previous["std"]).abs().mean())
    rows.append(avg)
    return rows


class ShiftProbe:
    """Records z (and z~) of one hidden layer on a fixed probe batch, in training mode.

    Training mode, so z~ is what the nonlinearity sees in training (the probe batch's own
    statistics); BN buffers are saved and restored, so the running averages are untouched.
    """

    def __init__(self, cfg: ShiftProbeConfig, model: nn.Module, x_probe: Tensor):
        self.cfg, self.model, self.x = cfg, model, x_probe
        self.block = model.blocks[cfg.layer - 1]
        self.sites = ["z", "z_tilde"] if has_bn(self.block) else ["z"]
        self.rows: list[dict] = []
        self.previous: dict[str, dict[str, Tensor]] = {}

    @torch.no_grad()
    def record(self, step: int) -> None:
        if step % self.cfg.every_steps:
            return
        captured: dict[str, Tensor] = {}
        hooks = [
            self.block.weight.register_forward_hook(lambda m, i, o: captured.__setitem__("z", o))
        ]
        if "z_tilde" in self.sites:
            hooks.append(
                self.block.norm.register_forward_hook(
                    lambda m, i, o: captured.__setitem__("z_tilde", o)
                )
            )
        buffers = [b.clone() for b in self.model.buffers()]
        try:
            with _forked_rng(self.x.device):
                self.model(self.x)
        finally:
            for h in hooks:
                h.remove()
            for b, saved in zip(self.model.buffers(), buffers, strict=True):
                b.copy_(saved)
        for site in self.sites:
            stats = unit_stats(captured[site])
            self.rows += shift_rows(
                step, self.cfg.layer, site, stats, self.cfg.units, self.previous.get(site)
            )
            self.previous[site] = stats


# --------------------------------------------------------------------------- ICS


def _later_params(model: nn.Module, layer: int) -> list[Tensor]:
    """Parameters of hidden layers >= layer and of the head, in a fixed order."""
    return [p for block in model.blocks[layer - 1 :] for p in block.parameters()] + list(
        model.head.parameters()
    )


class IcsProbe:
    """Santurkar et al.'s ICS at hidden layer l, measured on every k-th step's batch.

    `before_step` (after backward, before the optimizer step) keeps G and the old values of
    layers >= l; `after_step` copies the updated model, puts those old values back, and takes
    the gradient G' on the same batch. The earlier layers' update is the optimizer's actual one
    (momentum, weight decay included). Norm parameters (gamma, beta) of earlier layers count as
    earlier layers' weights. Cost: two clones every k steps inside the timed step, one forward and
    backward of the copy outside it.
    """

    def __init__(self, cfg: IcsConfig, model: nn.Module):
        self.cfg, self.model = cfg, model
        self.rows: list[dict] = []
        self._saved: tuple[Tensor, list[Tensor]] | None = None
        self._shadow: nn.Module | None = None  # a copy of the model, reused (deepcopy once)

    def _weight(self, model: nn.Module) -> Tensor:
        return model.blocks[self.cfg.layer - 1].weight.weight

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        if step % self.cfg.every_steps:
            return
        grad = self._weight(self.model).grad
        self._saved = (
            grad.detach().clone(),
            [p.detach().clone() for p in _later_params(self.model, self.cfg.layer)],
        )

    def after_step(self, step: int, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        """`loss_fn(model)` = the training loss of this step's batch for `model`."""
        if self._saved is None:
            return
        g, later = self._saved
        self._saved = None
        if self._shadow is None:
            self._shadow = copy.deepcopy(self.model)
        shadow = self._shadow
        with (
            torch.no_grad()
        ):  # shadow := the updated model, then layers >= l back to before the step
            for t_shadow, t in zip(
                [*shadow.parameters(), *shadow.buffers()],
                [*self.model.parameters(), *self.model.buffers()],
                strict=True,
            ):
                t_shadow.copy_(t)
            for p, old in zip(_later_params(shadow, self.cfg.layer), later, strict=True):
                p.copy_(old)
        shadow.train(self.model.training)
        shadow.zero_grad(set_to_none=True)
        with _forked_rng(g.device):
            loss_fn(shadow).backward()
        g2 = self._weight(shadow).grad.detach()
        g, g2 = g.double().flatten(), g2.double().flatten()
        cos = float(g @ g2 / (g.norm() * g2.norm())) if g.norm() > 0 and g2.norm() > 0 else math.nan
        self.rows.append(
            {
                "step": step,
                "layer": self.cfg.layer,
                "site": "ics",
                "unit": "all",
                "ics_l2": float((g - g2).norm()),
                "ics_cos": cos,
                "grad_norm": float(g.norm()),
            }
        )


# --------------------------------------------------------------------------- BN noise


@torch.no_grad()
def bn_inputs(
    model: nn.Module, x: Tensor, prepare: Callable[[Tensor], Tensor], chunk: int = 4096
) -> dict[int, tuple[Tensor, Tensor]]:
    """Per BN layer l: the per-example, per-channel mean of its input and of the input squared.

    Both (N, C), float64, computed in eval mode (earlier layers use their running statistics, so
    each example's value is a function of that example alone). For (N, C, H, W) inputs the means
    run over H, W: a mini-batch's BN statistics are then exact averages of these rows.
    """
    layers = {i + 1: b for i, b in enumerate(model.blocks) if has_bn(b)}
    parts: dict[int, list[tuple[Tensor, Tensor]]] = {layer: [] for layer in layers}

    def hook(layer: int):
        def fn(module, inputs):
            z = inputs[0].double()
            z = z.flatten(2) if z.dim() > 2 else z.unsqueeze(2)  # (n, C, L)
            parts[layer].append((z.mean(2), (z * z).mean(2)))

        return fn

    hooks = [b.norm.register_forward_pre_hook(hook(layer)) for layer, b in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), chunk):
            model(prepare(x[i : i + chunk]))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {
        layer: (torch.cat([a for a, _ in p]), torch.cat([b for _, b in p]))
        for layer, p in parts.items()
    }


def batch_stat_noise(
    m1: Tensor, m2: Tensor, batch_sizes: list[int], samples: int, gen: torch.Generator
) -> list[dict]:
    """Noise of mini-batch statistics from per-example moments m1 = E[z], m2 = E[z^2], each (N, C).

    For each batch size m, `samples` random batches (without replacement): batch mean mu_B and
    biased batch variance var_B per channel, against the full-set mu and var (biased):
      mean_noise = sqrt(avg over batches, channels of ((mu_B - mu) / sigma)^2)
      var_noise  = sqrt(avg over batches, channels of (var_B / var - 1)^2)
    Channels with zero variance are left out. expected_mean_noise = sqrt((N - m) / (m (N - 1))).
    """
    n = m1.shape[0]
    mu = m1.mean(0)
    var = m2.mean(0) - mu * mu
    keep = var > 1e-12 * (m2.mean(0).abs() + 1e-30)
    mu, var, m1, m2 = mu[keep], var[keep], m1[:, keep], m2[:, keep]
    rows = []
    for m in batch_sizes:
        if m > n:
            continue
        idx = (
            torch.rand(samples, n, generator=gen).argsort(1)[:, :m].to(m1.device)
        )  # (S, m): S random m-subsets
        mu_b = m1[idx].mean(1)  # (S, C)
        var_b = m2[idx].mean(1) - mu_b * mu_b
        rows.append(
            {
                "batch_size": m,
                "samples": samples,
                "channels": int(keep.sum()),
                "n_train": n,
                "mean_noise": float((((mu_b - mu) ** 2) / var).mean().sqrt()),
                "var_noise": float(((var_b / var - 1) ** 2).mean().sqrt()),
                "expected_mean_noise": math.sqrt((n - m) / (m * (n - 1))) if n > 1 else math.nan,
            }
        )
    return rows


def bn_noise_rows(
    model: nn.Module,
    x: Tensor,
    prepare: Callable[[Tensor], Tensor],
    cfg: BatchStatNoiseConfig,
    seed: int = 0,
    chunk: int = 4096,
) -> list[dict]:
    """bn_noise.csv rows for every BN layer of `model` on the inputs x (empty without BN)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for layer, (m1, m2) in bn_inputs(model, x, prepare, chunk).items():
        rows += [
            {"layer": layer, **r}
            for r in batch_stat_noise(m1, m2, cfg.batch_sizes, cfg.samples, gen)
        ]
    return rows


# --------------------------------------------------------------------------- the run's probes


def probe_batch(x_train: Tensor, size: int) -> Tensor:
    """The fixed probe batch: the first `size` examples of a permutation seeded 0 (the same in
    every run)."""
    idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:size]
    return x_train[idx.to(x_train.device)]


class RunProbes:
    """Every measurement a run's config asks for; each method is a no-op for what is not asked.

    The training loop calls `before_step(step)` after backward and before the optimizer step,
    `after_step(step, loss_fn)` after it (step = optimizer steps taken so far, from 1), and
    `close()` at the end, which writes probes.csv and bn_noise.csv atomically.
    """

    def __init__(self, cfg: RunConfig, model: nn.Module, data, run_dir: Path):
        m = cfg.measure
        self.model, self.data, self.run_dir, self.cfg = model, data, Path(run_dir), cfg
        self.shift = (
            ShiftProbe(
                m.shift_probe,
                model,
                data.prepare(probe_batch(data.x_train, m.shift_probe.probe_size)),
            )
            if m.shift_probe
            else None
        )
        self.ics = IcsProbe(m.ics, model) if m.ics else None
        if self.shift:
            self.shift.record(0)

    def before_step(self, step: int) -> None:
        if self.ics:
            self.ics.before_step(step)

    def after_step(self, step: int, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        if self.ics:
            self.ics.after_step(step, loss_fn)
        if self.shift:
            self.shift.record(step)

    def close(self) -> None:
        rows = (self.shift.rows if self.shift else []) + (self.ics.rows if self.ics else [])
        if rows:
            frame = pd.DataFrame(rows, columns=PROBE_COLUMNS).sort_values(
                ["step", "site"], kind="stable"
            )
            atomic_write_csv(self.run_dir / PROBES, frame)
        noise = self.cfg.measure.bn_noise
        if noise is not None:
            rows = bn_noise_rows(
                self.model,
                self.data.x_train,
                self.data.prepare,
                noise,
                seed=self.cfg.train.seed,
                chunk=self.cfg.train.eval_batch_size,
            )
            atomic_write_csv(self.run_dir / BN_NOISE, pd.DataFrame(rows, columns=NOISE_COLUMNS))


def noise_at_init(exp, results_dir: Path) -> pd.DataFrame:
    """`bnexp noise`: BN noise of every planned BN run's freshly initialized network (no training).

    Writes and returns results_dir/noise/bn_noise.csv's rows (run_id, norm, seed, NOISE_COLUMNS);
    the caller aggregates them (report.tables.bn_noise_table). Empty: no planned run has BN.
    """
    from bnexp.config import BatchStatNoiseConfig, expand
    from bnexp.data import load_dataset
    from bnexp.nn.models import build_model, init_weights
    from bnexp.training.device import resolve_device

    rows = []
    for run in expand(exp):
        cfg = run.config
        if cfg.model.norm == "none":
            continue
        if cfg.model.kind not in ("mlp", "cnn"):
            raise BnexpError(
                f"bnexp noise: measures the BN layers of hidden layers by index (model.blocks), "
                f"which only arch mlp and cnn have (found {cfg.model.kind})"
            )
        device = resolve_device(cfg.train.device)
        data = load_dataset(cfg.data).to(device)
        model = build_model(cfg.model, data.input_shape, data.num_outputs, cfg.train.seed)
        init_weights(model, cfg.train.seed)
        model.to(device)
        noise = cfg.measure.bn_noise or BatchStatNoiseConfig()
        for r in bn_noise_rows(
            model,
            data.x_train,
            data.prepare,
            noise,
            seed=cfg.train.seed,
            chunk=cfg.train.eval_batch_size,
        ):
            rows.append({"run_id": run.run_id, "norm": cfg.model.norm, "seed": cfg.train.seed, **r})
    frame = pd.DataFrame(rows, columns=["run_id", "norm", "seed", *NOISE_COLUMNS])
    if not frame.empty:
        atomic_write_csv(ResultsFolder(results_dir).noise_at_init, frame)
    return frame
