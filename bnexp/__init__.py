"""bnexp: measure what Batch Normalization does for a neural network.

The Python API (bnexp.api): `bnexp.run(config)`, `bnexp.load(results_dir)`,
`bnexp.validate(config)`, `bnexp.Results`, `bnexp.ConfigError`, `bnexp.RunsFailed`,
`bnexp.Problem`. They are
imported on first use, so `import bnexp.sweep.store` (or `bnexp status`) stays fast and never
imports torch. (One run's training loop lives in the subpackage `bnexp.training`, so that no
subpackage shadows `bnexp.run`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["ConfigError", "Problem", "Results", "RunsFailed", "load", "run", "validate"]

if TYPE_CHECKING:
    from bnexp.api import Results, load, run, validate
    from bnexp.errors import ConfigError, Problem, RunsFailed


def __getattr__(name: str) -> Any:
    if name in ("Results", "load", "run", "validate"):
        from bnexp import api

        return getattr(api, name)
    if name in ("ConfigError", "Problem", "RunsFailed"):
        from bnexp import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'bnexp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
