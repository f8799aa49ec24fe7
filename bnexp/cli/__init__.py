"""The `bnexp` command line. It only picks files, applies overrides and prints; the work lives in
the modules below it. One module per group of commands:

  cli/sweep.py    validate, run, status
  cli/inspect.py  repro, data info, report, noise
  cli/bench.py    bench bn

The modules that import torch, pandas and matplotlib are imported inside the commands that use
them, so `bnexp --help`, `bnexp validate` and `bnexp status` answer in a fraction of a second.
"""

from __future__ import annotations

# each module registers its commands on `app`; --help lists them in this order
# isort: off
from bnexp.cli import sweep  # noqa: F401
from bnexp.cli import inspect  # noqa: F401
from bnexp.cli import bench  # noqa: F401

# isort: on
from bnexp.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
