"""`python -m benchmarks.first_step ARGS...`: `bnexp ARGS...` in this process, printing
"FIRST_STEP <time.time()>" on stderr once, when the first optimizer step returns.

The startup section's clock (launch -> first optimizer step), kept out of bnexp's training
loop: bnexp's SGD (`bnexp.training.sgd.SGD`, what `optimizer: sgd` builds) has its `step`
wrapped from here. Importing torch and that module first changes no total: `bnexp run` imports
both before it trains. A one-run sweep trains in this process (the serial executor), so the
wrapped class is the one that steps. torch.optim is not imported here: it costs ~1 s
(torch._dynamo) that `optimizer: sgd` runs never pay.
"""

from __future__ import annotations

import sys
import time

MARK = "FIRST_STEP"


def first_step_marker():
    """A function that prints the mark line the first time it is called, and never again."""
    done = False

    def mark(*_) -> None:
        nonlocal done
        if not done:
            done = True
            print(f"{MARK} {time.time():.6f}", file=sys.stderr, flush=True)

    return mark


def wrap_optimizer_steps(mark) -> None:
    """Call `mark()` after every step of bnexp's SGD."""
    from bnexp.training import sgd

    step = sgd.SGD.step

    def step_then_mark(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        mark()
        return out

    sgd.SGD.step = step_then_mark


if __name__ == "__main__":
    wrap_optimizer_steps(first_step_marker())
    from bnexp.cli import main

    sys.argv = ["bnexp", *sys.argv[1:]]
    main()
