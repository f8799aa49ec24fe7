"""Claims as data: each verdict with its estimate, interval and n, against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from report_synthetic import GAP, make_results
from test_tables import T975_2, tables_of

from bnexp.report import VERDICTS, all_claims
from bnexp.report.verdicts import regularization, speedup

TARGET = {"metric": "train_acc", "value": 0.95}
SCHEMA = ["claim", "verdict", "text", "norm", "cell", "estimate", "ci_low", "ci_high", "n"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return tables_of(make_results(tmp_path_factory.mktemp("claims") / "exp"))


@pytest.fixture(scope="module")
def claims(tables):
    return all_claims(tables, TARGET)


def find(claims, kind, **cell):
    found = [c for c in claims if c.claim == kind and c.norm == "torch" and c.cell == cell]
    assert len(found) == 1, f"{kind} {cell}: {len(found)} claims"
    return found[0]


def test_every_claim_in_report_order_with_the_fixed_vocabulary(claims):
    kinds = [c.claim for c in claims]
    order = ["speedup", "best_lr", "regularization", "trend", "shift", "ics", "bn_noise"]
    assert kinds == sorted(kinds, key=order.index)
    # two lrs: speed-up per batch size at each variant's best lr (fewest steps); no validation
    # split, so regularization per lr cell (3: none diverged at batch 32, lr 0.5); one trend
    # (lr 0.1, over the two batch sizes); 4 cells x torch (shift, ics); one BN-noise sentence
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {
        "speedup": 2, "best_lr": 2, "regularization": 3, "trend": 1, "shift": 4, "ics": 4,
        "bn_noise": 1,
    }  # fmt: skip
    assert {c.verdict for c in claims} <= set(VERDICTS)


def test_speedup_claim_carries_the_paired_ratio(claims, tables):
    # one lr: per cell (the speed-up table alone), the 4 cells one Holm family
    one_lr = speedup(tables["speedup"], pd.DataFrame(), TARGET)
    (c,) = [c for c in one_lr if c.cell == {"batch_size": 64, "train.lr": 0.1}]
    # none: 100, 120, censored at 200; torch 10, 20, 20: the geometric mean of 10, 6, 10
    assert c.estimate == pytest.approx(600 ** (1 / 3)) and c.n == 3 and c.basis == "one lr"
    assert c.ci_low > 1 and c.ci_high == math.inf and c.verdict == "supported"
    assert c.details["bound"] == "lower"
    assert c.text.startswith(
        "**Speed-up** (BN = torch, steps to train_acc ≥ 0.95; 4 cells, Holm-corrected for "
        "family-wise α 0.05): supported in 4 of 4 — "
    )
    assert "batch_size=64, lr=0.1: ≥ 140 (1/3 > 200) steps without BN vs 17 [" in c.text
    assert f"speed-up ≥ {600 ** (1 / 3):.2f}× (≥ {c.ci_low:.2f}) over 3 paired seeds" in c.text
    assert len({x.text for x in one_lr}) == 1  # one sentence for the claim
    # none diverged in every seed: censored at the full 200 steps vs 15, 16, 17
    (div,) = [c for c in one_lr if c.cell == {"batch_size": 32, "train.lr": 0.5}]
    assert div.estimate == pytest.approx(200 / (15 * 16 * 17) ** (1 / 3))
    assert div.verdict == "supported"
    # several lrs: each variant at its best lr. batch 64: none's best 0.5 (80, 90, 100: no
    # censored run) vs torch's 0.5 (8, 9, 10)
    best = find(claims, "speedup", batch_size=64)
    assert best.estimate == pytest.approx(10.0) and best.basis == "best lr"
    assert (best.details["lr_none"], best.details["lr_bn"]) == (0.5, 0.5)
    # power on the per-seed log ratios: log(80/8) = log(90/9) = log(100/10): sd 0, mde ×1
    assert best.mde == pytest.approx(1.0) and best.seeds_needed is None


def test_a_speedup_where_no_run_reached_the_target_is_not_determined(tables):
    sp = tables["speedup"].copy()
    sp["speedup_bound"] = "none reached"
    sp["speedup_vs_none"] = "— (no run reached the target)"
    for c in speedup(sp, pd.DataFrame(), TARGET):
        assert c.verdict == "not determined" and c.estimate is None and c.mde is None
    assert "not determined: no run reached the target" in c.text and "×" not in c.text


def test_regularization_claim_is_the_final_test_accuracy_effect_with_holm(tables):
    reg = tables["regularization"]
    # test acc = 0.99 - gap: effect acc(BN) - acc(none) = gap(none) - gap(BN) = .02, .03, .02
    diffs = np.array(GAP["none"]) - np.array(GAP["torch"])
    half = T975_2 * diffs.std(ddof=1) / math.sqrt(3)
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(3))
    p = 1 - t / math.sqrt(2 + t * t)  # two-sided t-test p with 2 df
    claims = regularization(reg, 0.97, "20 epochs, lr rule none")
    (c,) = [c for c in claims if c.cell == {"batch_size": 64, "train.lr": 0.1}]
    assert c.estimate == pytest.approx(diffs.mean()) and c.n == 3 and c.basis == "final test acc"
    assert (c.ci_low, c.ci_high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    # three cells with the same p (0.020 < 0.05): Holm multiplies the smallest by 3, so the
    # family keeps its 5% and no cell is supported, and the sentence says why
    assert c.details["p"] == pytest.approx(p) and c.details["p_holm"] == pytest.approx(3 * p)
    assert {x.verdict for x in claims} == {"not supported"}
    assert f"not supported after Holm's correction (p {p:.3f}, adjusted {3 * p:.3f})" in c.text
    assert "3 cells, Holm-corrected" in c.text and "after 20 epochs, lr rule none" in c.text
    assert "no validation split, so no lr is chosen" in c.text
    # the same cell alone is its own family: supported
    alone = reg[(reg["batch_size"] == 64).to_numpy() & (reg["train.lr"] == 0.1).to_numpy()]
    (single,) = regularization(alone, 0.97)
    assert single.verdict == "supported" and "supported (higher test accuracy" in single.text
    # test NLL none - BN: 2 * (gap(none) - gap(BN)) by construction
    assert c.details["nll_effect"] == pytest.approx(2 * diffs.mean())
    # an arm that has not fitted its training set: no verdict
    unfit = reg.copy()
    unfit.loc[unfit["norm"] == "torch", "train_acc_min"] = 0.65
    for u in regularization(unfit, 0.97):
        assert u.verdict == "not determined" and u.mde is None
    assert "not determined: not fitted (train acc 0.65 < 0.97)" in u.text
    assert "supported" not in u.text
    # the arm without BN unfitted: the claim's train_acc_min is that arm's, as the text says
    unfit = reg.copy()
    unfit.loc[unfit["norm"] == "none", "train_acc_min"] = 0.966
    u = regularization(unfit, 0.97)[0]
    assert u.details["train_acc_min"] == 0.966 and "(train acc 0.966 < 0.97)" in u.text


def test_shift_and_ics_judge_each_variant_against_none(claims):
    shift = find(claims, "shift", batch_size=64, **{"train.lr": 0.1})
    # drift_p50 / std: torch z~ 0.01 / 0.5 vs none z 0.1 / 0.5, the same in every seed
    assert shift.estimate == pytest.approx(0.02) and shift.n == 3
    assert shift.verdict == "supported" and "BN's z~ drifts less" in shift.text
    ics = find(claims, "ics", batch_size=64, **{"train.lr": 0.1})
    assert ics.estimate == pytest.approx(0.1)  # ||G - G'|| 0.1 / ||G|| 1.0 everywhere
    assert ics.verdict == "not supported" and "no clear difference" in ics.text


def test_best_lr_and_bn_noise_are_measurements(claims):
    best = find(claims, "best_lr", batch_size=32)  # torch only: the BN variant judged
    # none at its best lr 0.1 (150, 160, 170) vs torch at 0.5 (15, 16, 17)
    assert best.estimate == pytest.approx(10.0) and best.n == 3 and best.verdict == "measured"
    assert best.text.startswith("**Learning rates** (torch, batch_size=32): best lr 0.5 vs 0.1")
    (noise,) = [c for c in claims if c.claim == "bn_noise"]
    # mean_noise = m^-0.5 exactly: slope -0.5 over torch x layers 1, 2
    assert noise.estimate == pytest.approx(-0.5) and noise.n == 2 and noise.norm is None


def test_claims_serialize_to_the_documented_json(claims):
    data = json.loads(json.dumps([c.to_dict() for c in claims], allow_nan=False))
    for obj in data:
        assert list(obj)[: len(SCHEMA)] == SCHEMA
        assert isinstance(obj["cell"], dict) and isinstance(obj["text"], str)
        for k in ("estimate", "ci_low", "ci_high"):
            assert obj[k] is None or isinstance(obj[k], float), (k, obj[k])
        assert obj["n"] is None or isinstance(obj["n"], int)
    speed = next(o for o in data if o["claim"] == "speedup")
    # cells sorted by their keys (batch 32 before 64; two lrs: each variant's best, so the lr
    # is no cell key); numbers stay numbers
    assert speed["cell"] == {"batch_size": 32}
    assert isinstance(speed["cell"]["batch_size"], int)


def test_a_zero_that_rounding_signed_reads_unsigned_in_claims_json_as_on_the_terminal():
    """claims.json and the terminal show one text: '-0.000' is '0.000' in both."""
    from bnexp.report.claims import Claim
    from bnexp.report.render import cell_text

    text = "effect -0.000 [-0.012, 0.011], −0.0 -0.5"
    claim = Claim("regularization", "not supported", text, None)
    assert claim.text == "effect 0.000 [-0.012, 0.011], 0.0 -0.5"
    assert claim.to_dict()["text"] == claim.text == cell_text(claim.text)
