"""Comparing two runs' files, for the tests of bnexp.training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

# Two runs computed by differently vectorized code (a batched model vs one model, AVX2 vs
# AVX-512 kernels) round differently in the last bits; training amplifies that, most in a
# diverging run (losses of 5e6 differing by 13 on one CPU: 2e-6 relative). So numbers are
# compared relative + absolute: |a - b| <= ATOL + RTOL * |b|, never bit for bit.
RTOL, ATOL = 1e-4, 1e-5


SUMMARY_KEYS = [
    "final_train_acc",
    "final_test_acc",
    "final_train_loss",
    "final_test_loss",
    "best_test_acc",
    "steps_to_target",
    "epochs_to_target",
    "diverged",
    "diverged_step",
    "steps",
    "epochs",
    "seed",
    "run_id",
]


def assert_same_run(ref: Path, got: Path, same_config: bool = True) -> None:
    """The run in `got` computed what the run in `ref` did, within RTOL/ATOL; the miss is shown."""
    a = pd.read_csv(ref / "metrics.csv")
    b = pd.read_csv(got / "metrics.csv")
    assert list(a.columns) == list(b.columns) and a.shape == b.shape, f"{a.shape} vs {b.shape}"
    np.testing.assert_allclose(
        b.to_numpy(float),
        a.to_numpy(float),
        rtol=RTOL,
        atol=ATOL,
        equal_nan=True,
        err_msg=f"metrics.csv of {got} vs {ref}",
    )
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((got / "summary.json").read_text())
    for k in SUMMARY_KEYS:
        x, y = sa[k], sb[k]
        if isinstance(x, float) and isinstance(y, float):
            close = math.isclose(y, x, rel_tol=RTOL, abs_tol=ATOL)
            assert close or (math.isnan(x) and math.isnan(y)), (
                f"summary {k}: {x} vs {y} (miss {abs(x - y):.3g})"
            )
        else:
            assert x == y, f"summary {k}: {x!r} vs {y!r}"
    if same_config:
        assert (ref / "config.yaml").read_text() == (got / "config.yaml").read_text()
