"""bnexp: measure what Batch Normalization does for a neural network.

The Python API (bnexp.api): `bnexp.run(config)`, `bnexp.load(results_dir)`,
`bnexp.validate(config)`, `bnexp.Results`, `bnexp.ConfigError`, `bnexp.Problem`. They are
imported on first use, so `import bnexp.sweep.store` (or `bnexp status`) stays fast and never
imports torch.
"""

from __future__ import annotations

import inspect
import types
from typing import TYPE_CHECKING, Any

# bnexp/run/ (one run's training loop) is a subpackage, and importing any of its modules sets
# the package attribute `run` to it, which would hide the API's run(config). So `bnexp.run` is
# that subpackage made callable: calling it is bnexp.api.run. Its __init__ imports nothing.
from bnexp import run as _run_package

__version__ = "0.1.0"
__all__ = ["ConfigError", "Problem", "Results", "load", "run", "validate"]

if TYPE_CHECKING:
    from bnexp.api import Results, load, run, validate  # noqa: F811
    from bnexp.config import ConfigError
    from bnexp.errors import Problem


class _CallableRunPackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from bnexp.api import run as run_experiment

        return run_experiment(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # help() and IDEs show bnexp.api.run's
        from bnexp.api import run as run_experiment

        return inspect.signature(run_experiment)


_run_package.__class__ = _CallableRunPackage


def __getattr__(name: str) -> Any:
    if name in ("Results", "load", "validate"):
        from bnexp import api

        return getattr(api, name)
    if name == "ConfigError":
        from bnexp.config import ConfigError

        return ConfigError
    if name == "Problem":
        from bnexp.errors import Problem

        return Problem
    raise AttributeError(f"module 'bnexp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
