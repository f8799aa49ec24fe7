"""A user's network from `model.factory`: import the function a config names and call it.

"pkg.module:function" is imported by name (installed, or on PYTHONPATH); "path/to/file.py:
function" from that file (bnexp.config made a relative path absolute, from the config file's
folder). Importing runs the user's code: that is the point, and why `bnexp repro` asks for
--trust-code before it imports code named in a results folder (docs/trust.md). Every way this
can fail is one ConfigError line naming model.factory, raised before any training.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnexp.config.model import factory_parts
from bnexp.errors import ConfigError


def _fail(spec: str, what: str) -> ConfigError:
    return ConfigError([f"model.factory: {spec}: {what}"])


def _import_file(spec: str, path: Path) -> Any:
    if not path.is_file():
        raise _fail(spec, f"no file {path} (a relative path is relative to the config's folder)")
    # one module per file, under a name of its own, so two factory files never clash
    name = "bnexp_factory_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module  # what dataclasses and pickle look a module up by
    try:
        loader.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if not isinstance(e, Exception):
            raise
        raise _fail(spec, f"importing {path} raised {type(e).__name__}: {e}") from None
    return module


def load_factory(spec: str) -> Callable[..., Any]:
    """The function `spec` ("module:function" or "file.py:function") names."""
    target, name, is_file = factory_parts(spec)
    if is_file:
        module = _import_file(spec, Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise _fail(spec, f"cannot import module {target} ({type(e).__name__}: {e}); "
                        "expected an installed module or one on PYTHONPATH") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = "nothing" if fn is None else type(fn).__name__
        raise _fail(spec, f"{target} has no function {name} (found {found})")
    return fn


def call_factory(spec: str, args: dict[str, Any] | None, seed: int) -> nn.Module:
    """function(**args) with torch's global RNG seeded by `seed` (the same initial weights for
    every norm of a seed), restored after so the caller's random stream does not move."""
    fn = load_factory(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = fn(**(args or {}))
        except Exception as e:
            raise _fail(spec, f"calling it with factory_args {args or {}} raised "
                        f"{type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise _fail(spec, f"returned type {type(model).__name__}, expected a torch.nn.Module")
    return model


@torch.no_grad()
def check_outputs(spec: str, model: nn.Module, input_shape: tuple[int, ...], outputs: int) -> None:
    """The model maps one example (eval mode, zeros) to (1, outputs) logits: the loss's shape."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, *input_shape))
    except Exception as e:
        raise _fail(spec, f"the model fails on one example of shape {tuple(input_shape)} "
                    f"({type(e).__name__}: {e})") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, outputs):
        raise _fail(spec, f"the model's output for one example is {shape}, expected (1, "
                    f"{outputs}) for this data's {outputs} output(s) (pass what it needs in "
                    "model.factory_args)")
