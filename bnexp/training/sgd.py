"""`SGD`: torch.optim.SGD's update, without torch.optim.

Why: in torch 2.14 constructing any torch.optim optimizer imports torch._dynamo (~1.2 s on this
2-core machine; `Optimizer.__init__`, `zero_grad` and `step` all go through dynamo's decorators),
which every `bnexp run` and every fresh worker paid before its first step. This class computes
what torch.optim.SGD computes with its defaults (no dampening, no maximize), bit for bit
(`tests/training/test_sgd.py`), with the update of torch's single-tensor path, applied to all
parameters at once with torch._foreach_* ops as torch's foreach path does:

    g = grad + weight_decay * p                        (if weight_decay)
    b = g (first step), else b = momentum * b + g      (if momentum)
    g = g + momentum * b (nesterov), else g = b        (if momentum)
    p = p - lr * g

Its `state_dict()` has torch.optim.SGD's layout, so checkpoints written by either load into the
other. Adam stays torch's (its users pay the import).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class SGD:
    """Stochastic gradient descent with momentum, Nesterov and weight decay (torch's convention).

    `params`: tensors, or parameter groups as torch takes them (dicts with "params" and any of
    lr, momentum, weight_decay, nesterov overriding the defaults given here)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        given = list(params)
        groups = given if given and isinstance(given[0], dict) else [{"params": given}]
        # torch.optim.SGD's group keys (state_dict compatibility); only the first five are used
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": 0,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": False,
            "foreach": None,
            "differentiable": False,
            "fused": None,
        }
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": list(g["params"]),
                **defaults,
                **{k: v for k, v in g.items() if k != "params"},
            }
            for g in groups
        ]
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.buffers: list[Tensor | None] = [None] * len(self.params)  # momentum, per parameter

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter with a gradient, as torch's foreach path computes it:
        each torch._foreach_* call applies one op to a group's whole list (on the CPU a loop in
        C++ over the same per-tensor kernels, so the numbers are the single-tensor path's), which
        saves the Python of one op per parameter (measured, the quickstart MLP's 8 parameters
        with momentum, 1 thread: 73 -> 52 us per step)."""
        first = 0  # the group's first parameter's index in self.params
        for group in self.param_groups:
            n = len(group["params"])
            self._step_group(group, range(first, first + n))
            first += n

    def _step_group(self, group: dict[str, Any], positions: range) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        idx = [i for i in positions if self.params[i].grad is not None]
        if not idx:
            return
        params = [self.params[i] for i in idx]
        grads = [p.grad for p in params]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            have = [k for k, i in enumerate(idx) if self.buffers[i] is not None]
            if have:  # b = momentum * b + g
                bufs = [self.buffers[idx[k]] for k in have]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, [grads[k] for k in have], alpha=1 - group["dampening"])
            for k, i in enumerate(idx):
                if self.buffers[i] is None:  # the first step: b = g
                    self.buffers[i] = grads[k].detach().clone()
            bufs = [self.buffers[i] for i in idx]
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.SGD's layout: per-parameter state by index, groups with index lists."""
        groups, first = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            keys = {k: v for k, v in group.items() if k != "params"}
            groups.append({**keys, "params": list(range(first, first + n))})
            first += n
        return {
            "state": {
                i: {"momentum_buffer": b} for i, b in enumerate(self.buffers) if b is not None
            },
            "param_groups": groups,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A state_dict of this class or of torch.optim.SGD over the same parameter groups."""
        saved = state["param_groups"]
        sizes, own = (
            [len(g["params"]) for g in saved],
            [len(g["params"]) for g in self.param_groups],
        )
        if sizes != own:
            raise ValueError(
                f"the saved optimizer's parameter groups hold {sizes} parameters, this one's {own}"
            )
        self.buffers = [None] * len(self.params)
        pos = 0
        for group, saved_group in zip(self.param_groups, saved, strict=True):
            for key in ("lr", "momentum", "weight_decay", "nesterov"):
                group[key] = saved_group[key]
            for index in saved_group["params"]:
                buf = state["state"].get(index, {}).get("momentum_buffer")
                if buf is not None:
                    p = self.params[pos]
                    self.buffers[pos] = buf.to(device=p.device, dtype=p.dtype).clone()
                pos += 1
