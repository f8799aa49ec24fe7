"""`bnexp.run` from a plain script (no main guard), from `python -` and from `python -c`: the
README's Python example, saved as a script, runs as written; every run failing raises."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from sweep_helpers import bnexp_env, tiny_experiment, write_yaml

# the README's Python example, on a tiny sweep of 4 runs with 2 workers (a pool, when it can)
EXAMPLE = textwrap.dedent(
    """\
    import bnexp

    plan = bnexp.validate("exp.yaml")
    res = bnexp.run("exp.yaml", out="results", workers=2)
    res.summary[["run_id", "norm", "train.seed", "final_test_acc", "steps_to_target"]]
    curves = res.metrics()
    curves.groupby(["model.norm", "step"])["train_acc"].mean().unstack(0)
    res.tables["speedup"]
    print("DONE", len(plan), len(res.summary), sorted(res.claims["claim"].dropna().unique()))
    """
)
NOTE = "training the runs one by one in this process"


def _run(cmd: list[str], cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, input=stdin, cwd=cwd, env=bnexp_env(), capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "stdin", "-c", "guarded"])
def test_the_readme_example_runs_as_written(tmp_path, how):
    write_yaml(tmp_path / "exp.yaml", tiny_experiment(epochs=2))
    if how == "script":
        (tmp_path / "script.py").write_text(EXAMPLE)
        p = _run([sys.executable, "script.py"], tmp_path)
    elif how == "stdin":
        p = _run([sys.executable, "-"], tmp_path, stdin=EXAMPLE)
    elif how == "-c":
        p = _run([sys.executable, "-c", EXAMPLE], tmp_path)
    else:
        guarded = "def main():\n" + textwrap.indent(EXAMPLE, "    ")
        (tmp_path / "script.py").write_text(
            guarded + '\n\nif __name__ == "__main__":\n    main()\n'
        )
        p = _run([sys.executable, "script.py"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "DONE 4 4" in p.stdout, p.stdout + p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    # a script without a main guard and stdin cannot be run again by workers: one note, in-process
    notes = [line for line in p.stderr.splitlines() if NOTE in line]
    assert len(notes) == (1 if how in ("script", "stdin") else 0), p.stderr[-2000:]
    status = subprocess.run(
        [sys.executable, "-m", "bnexp", "status", "results/tiny"],
        cwd=tmp_path,
        env=bnexp_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "4 done" in status.stdout, status.stdout


@pytest.mark.slow
def test_every_run_failing_raises_the_first_error_and_records_failed_runs(tmp_path):
    raw = tiny_experiment(epochs=1, sweep={"train.seed": [0, 1]})
    raw["data"] = {"dataset": "digits"}
    write_yaml(tmp_path / "exp.yaml", raw)
    script = textwrap.dedent(
        """\
        import bnexp
        import bnexp.sweep.worker as worker

        def broken(*args, **kwargs):
            raise ValueError("the loss is broken")

        worker.train_run = broken
        try:
            bnexp.run("exp.yaml", out="results", workers=1)
        except bnexp.RunsFailed as e:
            print("RAISED", e)
        """
    )
    (tmp_path / "script.py").write_text(script)
    p = _run([sys.executable, "script.py"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RAISED" in p.stdout and "every run failed (2)" in p.stdout, p.stdout + p.stderr
    assert "ValueError: the loss is broken" in p.stdout, p.stdout
    status = subprocess.run(
        [sys.executable, "-m", "bnexp", "status", "results/tiny"],
        cwd=tmp_path,
        env=bnexp_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 failed" in status.stdout and "missing" not in status.stdout.split("\n")[0], (
        status.stdout
    )
