"""`bnexp report` end to end on a synthetic results folder: every table, plot (PNG), claims.json,
report.md and a self-contained report.html (plots take seconds: these tests are slow)."""

from __future__ import annotations

import base64
import json

import matplotlib.image as mpimg
import pandas as pd
import pytest
import yaml
from report_synthetic import make_results
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.report import build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

EXPECTED_COLUMNS = {
    "speedup": [
        "batch_size",
        "train.lr",
        "norm",
        "runs",
        "reached",
        "censored",
        "diverged",
        "steps_to_target",
        "steps_mean",
        "steps_ci_low",
        "steps_ci_high",
        "epochs_mean",
        "time_s_mean",
        "speedup",
        "speedup_ci_low",
        "speedup_ci_high",
        "speedup_bound",
        "speedup_pairs",
        "speedup_vs_none",
        "time_speedup",
        "best_lr",
        "diverged_at",
    ],
    "best_lr": [
        "batch_size",
        "norm",
        "best_lr",
        "steps_at_best_lr",
        "diverged_at",
        "smallest_diverged_lr",
        "speedup_at_best_lr",
        "speedup_at_best_lr_ci_low",
        "speedup_at_best_lr_ci_high",
    ],
    "regularization": [
        "batch_size",
        "train.lr",
        "norm",
        "runs",
        "diverged",
        "gen_gap_mean",
        "gen_gap_ci_low",
        "gen_gap_ci_high",
        "loss_gap_mean",
        "loss_gap_ci_low",
        "loss_gap_ci_high",
        "effect_mean",
        "effect_ci_low",
        "effect_ci_high",
        "fit_runs",
        "fit_excluded",
        "fit_gen_gap_mean",
        "fit_effect_mean",
        "fit_effect_ci_low",
        "fit_effect_ci_high",
    ],
    "trend": [
        "kind",
        "norm",
        "basis",
        "x",
        "seeds",
        "effect_mean",
        "fitted",
        "band_low",
        "band_high",
        "slope",
        "slope_ci_low",
        "slope_ci_high",
        "slope_se",
        "slope_seeds",
    ],
    "bn_noise": [
        "norm",
        "layer",
        "batch_size",
        "runs",
        "mean_noise_mean",
        "mean_noise_ci_low",
        "var_noise_mean",
        "expected_mean_noise",
        "mean_noise_slope",
        "var_noise_slope",
        "expected_slope",
    ],
    "shift": [
        "batch_size",
        "train.lr",
        "norm",
        "site",
        "layer",
        "runs",
        "drift_p50_mean",
        "drift_p50_ci_low",
        "drift_std_mean",
        "drift_p50_rel_mean",
    ],
    "ics": [
        "batch_size",
        "train.lr",
        "norm",
        "layer",
        "runs",
        "ics_l2_mean",
        "ics_cos_mean",
        "ics_rel_mean",
    ],
}
PLOTS = [
    "accuracy",
    "speedup",
    "gen_gap",
    "effect_vs_batch",
    "bn_noise",
    "shift_percentiles",
    "shift_drift",
    "ics",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One synthetic results folder and its report, shared by the tests below."""
    results = make_results(tmp_path_factory.mktemp("report") / "exp")
    return results, build_report(results)


@pytest.mark.slow
def test_report_writes_every_table_and_plot(built):
    results, report = built
    for name, columns in EXPECTED_COLUMNS.items():
        frame = pd.read_csv(results / "tables" / f"{name}.csv")
        missing = [c for c in columns if c not in frame.columns]
        assert not missing, f"tables/{name}.csv lacks {missing}"
    for name in PLOTS:
        path = results / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (
            f"{path}: shape {image.shape}"
        )
    md = (results / "report.md").read_text()
    for name in PLOTS:
        assert f"plots/{name}.png" in md
    assert "**Speed-up**" in md and "**Regularization**" in md and "**BN noise**" in md
    assert "**Trend**" in md
    assert len(report.plots) == len(PLOTS)


@pytest.mark.slow
def test_claims_json_and_report_html_say_what_report_md_says(built):
    results, report = built
    data = json.loads((results / "claims.json").read_text())
    assert data == [c.to_dict() for c in report.claims]
    md = (results / "report.md").read_text()
    for obj in data:
        assert f"- {obj['text']}\n" in md
    page = (results / "report.html").read_text()
    for name in PLOTS:
        png = (results / "plots" / f"{name}.png").read_bytes()
        assert f'alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow
def test_ghost_batch_sweep_gets_its_plot(tmp_path):
    results = make_results(tmp_path / "ghost", ghost=True)
    report = build_report(results)
    assert (results / "plots" / "gen_gap_ghost.png").read_bytes()[:8] == PNG_SIGNATURE
    assert any(c.claim == "ghost_batch" for c in report.claims)


@pytest.mark.slow
def test_cli_report_prints_the_tables_and_where_it_wrote(built):
    results, _ = built
    ok = CliRunner().invoke(app, ["report", str(results)])
    assert ok.exit_code == 0, ok.output
    assert "Speed-up" in ok.output and "report.md" in ok.output and "report.html" in ok.output


@pytest.mark.slow
def test_run_ends_with_the_report(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "model": {"arch": "mlp", "hidden": [8, 8], "activation": "sigmoid"},
                "train": {
                    "lr": 0.5,
                    "momentum": 0.9,
                    "batch_size": 128,
                    "epochs": 2,
                    "device": "cpu",
                },
                "measure": {
                    "target": {"metric": "train_acc", "value": 0.3},
                    "shift_probe": {"layer": 2, "every_steps": 3, "units": [0]},
                    "ics": {"layer": 2, "every_steps": 3},
                    "bn_noise": {"batch_sizes": [4, 16, 64], "samples": 10},
                },
                "sweep": {"model.norm": ["none", "torch"], "train.seed": [0, 1]},
            }
        )
    )
    out = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "results")])
    assert out.exit_code == 0, out.output
    res = tmp_path / "results" / "tiny"
    for name in ("speedup", "regularization", "bn_noise", "shift", "ics"):
        assert (res / "tables" / f"{name}.csv").exists(), name
    assert (res / "report.md").exists() and (res / "plots" / "shift_percentiles.png").exists()
