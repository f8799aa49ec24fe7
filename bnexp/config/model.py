"""The `model:` section: bnexp's MLP, CNN and CIFAR ResNets, or a user's network from a factory,
with the norm layer and BN's controls."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from bnexp.config.strict import Strict

# "pkg.module:function" or "path/to/file.py:function" (a relative file is relative to the
# config file's folder; bnexp.config.load_experiment makes it absolute)
FACTORY = re.compile(r"^(?P<target>[^:].*?):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
RESNET_WIDTHS = (16, 32, 64)  # He et al. 2016 §4.2: three stages, 2n layers each


def factory_parts(spec: str) -> tuple[str, str, bool]:
    """(module or file, function name, whether it names a file) of a valid model.factory."""
    m = FACTORY.match(spec)
    assert m is not None, spec
    target = m["target"]
    return target, m["name"], target.endswith(".py")


class NoisyBNConfig(Strict):
    """Santurkar et al. (2018)'s noisy BN: each training forward multiplies every channel of the
    BN output by (1 + scale_std·ε₁) and adds mean_std·ε₂, with ε ~ N(0, 1) redrawn per channel
    every `every_steps` training forwards (so the distribution the next layer sees keeps moving)."""

    mean_std: NonNegativeFloat = 0.0  # std of the random per-channel shift
    scale_std: NonNegativeFloat = 0.0  # std of the random per-channel scale around 1
    every_steps: PositiveInt = 1  # training forwards between redraws


class ModelConfig(Strict):
    # mlp, cnn: bnexp's networks (hidden / channels, activation, norm_position);
    # resnet: He et al. 2016 §4.2's CIFAR ResNet of `depth` layers
    arch: Literal["mlp", "cnn", "resnet"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [100, 100, 100])  # MLP widths
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 128])  # CNN blocks
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"  # the nonlinearity g
    # resnet: 6n+2 layers (20, 32, 44, 56, 110): stages of 16/32/64 channels, n blocks each,
    # option-A shortcuts (parameter-free: strided and zero-padded)
    depth: int | None = Field(None, ge=8)
    # your own network instead of arch: "pkg.module:function" or "path/to/file.py:function"
    # (relative to the config file's folder), called as function(**factory_args) with torch
    # seeded by train.seed; it returns an nn.Module whose BatchNorm1d/2d layers bnexp swaps as
    # `norm` says (bnexp.nn.convert_norm). Naming code in a config runs it: see docs/trust.md.
    factory: str | None = None
    # the factory's keyword arguments (bnexp passes nothing else: give it the input shape and
    # class count it needs); its output for one example must have the data's number of outputs
    factory_args: dict[str, Any] | None = None
    norm: Literal["none", "torch", "custom"] = "none"  # no BN, torch's BatchNorm or ours
    # pre_activation: z -> BN -> g (the lecture's z -> z~ -> g(z~)); post_activation: g(z) -> BN
    norm_position: Literal["pre_activation", "post_activation"] = "pre_activation"
    bn_eps: PositiveFloat = 1e-5  # ε in (z − μ)/√(σ² + ε)
    bn_momentum: float | None = Field(0.1, ge=0, le=1)  # torch's convention; None = cumulative
    # The controls below separate BN's two effects; they exist only on our layer (norm: custom).
    # Statistics over virtual sub-batches of this size (Hoffer et al. 2017): changes the
    # normalization noise without changing the SGD batch. null: the whole mini-batch.
    ghost_batch_size: int | None = Field(None, ge=2)
    # batch: normalize with the mini-batch's statistics (BN); population: with the running
    # estimates in training too (still updated from the batches) - BN without the batch noise.
    bn_stats: Literal["batch", "population"] = "batch"
    bn_noise: NoisyBNConfig | None = None  # noisy BN after the normalization; null: off
    # What eval mode normalizes with: running (torch's way), batch (each eval batch's own
    # statistics), recalibrate (running estimates recomputed over the whole training set,
    # layer by layer, before every evaluation: one extra pass over it per BN layer).
    eval_stats: Literal["running", "batch", "recalibrate"] = "running"

    @property
    def kind(self) -> str:
        """What builds the network: "factory", or the arch."""
        return "factory" if self.factory is not None else self.arch

    @model_validator(mode="after")
    def _controls_need_custom_norm(self) -> ModelConfig:
        on = [
            f"{key}: {value}"
            for key, value, off in [
                ("ghost_batch_size", self.ghost_batch_size, None),
                ("bn_stats", self.bn_stats, "batch"),
                ("bn_noise", self.bn_noise, None),
                ("eval_stats", self.eval_stats, "running"),
            ]
            if value != off
        ]
        key = "hidden" if self.arch == "mlp" else "channels"
        if self.kind in ("mlp", "cnn") and not getattr(self, key) and self.norm != "none":
            raise ValueError(
                f"model.{key}: [] has no hidden layer, so norm: {self.norm} has nothing to "
                "normalize (the run would equal norm: none); give hidden widths or norm: none"
            )
        if on and self.norm != "custom":
            raise ValueError(
                f"{', '.join(on)}: "
                f"{'this control needs' if len(on) == 1 else 'these controls need'} "
                f"norm: custom (found norm: {self.norm}); the controls are features of bnexp's "
                "own BN layer"
            )
        return self

    @model_validator(mode="after")
    def _keys_fit_network(self) -> ModelConfig:
        """depth only for resnet; factory alone; the mlp/cnn keys at their defaults elsewhere."""
        if self.factory is not None and not FACTORY.match(self.factory):
            raise ValueError(
                f"model.factory: {self.factory!r} is not 'pkg.module:function' or "
                "'path/to/file.py:function'"
            )
        if self.factory is not None:
            target, _, is_file = factory_parts(self.factory)
            if not is_file and not _MODULE.match(target):
                raise ValueError(
                    f"model.factory: {target!r} is neither a dotted module name nor a .py file"
                )
        if self.factory_args is not None and self.factory is None:
            raise ValueError("model.factory_args: needs model.factory (the function it is for)")
        if self.kind == "resnet" and self.depth is None:
            raise ValueError("model.depth: arch resnet needs a depth 6n+2 (20, 32, 44, 56, 110)")
        if self.depth is not None and (self.kind != "resnet" or (self.depth - 2) % 6):
            expected = (
                "a depth 6n+2 (20, 32, 44, 56, 110)"
                if self.kind == "resnet"
                else ("arch: resnet (the other networks take hidden or channels)")
            )
            raise ValueError(f"model.depth: {self.depth} needs {expected}")
        if self.kind in ("mlp", "cnn"):
            return self
        unused = {
            "hidden": [100, 100, 100],
            "channels": [32, 64, 128],
            "activation": "relu",
            "norm_position": "pre_activation",
        }
        if self.factory is not None:  # the user's BN layers keep their own eps and momentum
            unused.update({"arch": "mlp", "bn_eps": 1e-5, "bn_momentum": 0.1})
        for key, default in unused.items():
            if getattr(self, key) != default:
                what = f"model.factory {self.factory}" if self.factory else "arch: resnet"
                raise ValueError(
                    f"model.{key}: {what} builds the whole network with its own settings, so "
                    f"{key} does not apply (found {getattr(self, key)!r}; remove it)"
                )
        return self


def model_size_bound(m: ModelConfig, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, widest layer's values per example) of the network, at least: what the
    memory bound (schema.memory_lower_bound) takes. A factory's network is unknown until it is
    built: counted as its input alone."""
    c, h, w = shape
    if m.kind == "mlp":
        sizes = [c * h * w, *m.hidden, 1]
        return sum(a * b + b for a, b in zip(sizes, sizes[1:])), max(m.hidden, default=1)
    if m.kind == "cnn":
        sizes = [c, *m.channels]
        params = sum(9 * a * b + b for a, b in zip(sizes, sizes[1:])) + sizes[-1]
        return params, max(m.channels, default=1)
    if m.kind == "resnet":
        n = (m.depth - 2) // 6
        convs = [(c, RESNET_WIDTHS[0])]  # the first layer, then 2n convs per stage
        for i, width in enumerate(RESNET_WIDTHS):
            before = RESNET_WIDTHS[max(i - 1, 0)]
            convs += [(before, width)] + [(width, width)] * (2 * n - 1)
        return sum(9 * a * b for a, b in convs) + RESNET_WIDTHS[-1], RESNET_WIDTHS[0] * h * w
    return 0, c * h * w
