"""`dtx randomization simulate`: parameter overrides, prevalences, per-run output, new metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from dtx_trials.cli.randomization import randomization
from tests.dtx_trials.trial_flow import LIBRARY

MCI = str(LIBRARY / "cognitive_impairment.yaml")


def _simulate(tmp_path: Path, *args: str) -> tuple[dict[str, dict[str, object]], str]:
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(
        randomization, ["simulate", MCI, "--runs", "4", "--seed", "7", "--json", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_defaults_use_the_protocols_sample_size_and_print_every_metric(tmp_path: Path) -> None:
    summary, output = _simulate(tmp_path)
    assert list(summary) == [
        "protocol: permuted_block", "simple", "stratified blocks 4/8", "minimization (p=0.8)"
    ]
    assert {s["n"] for s in summary.values()} == {200}  # MCI's sample_size.n
    for row in ("correct guesses (CS; chance 1/2 = 0.500)", "deterministic allocations",
                "exact balance during enrolment (EB)", "selection bias (CS − chance)"):
        assert row in output
    blocks = summary["protocol: permuted_block"]["metrics"]
    assert blocks["deterministic_rate"]["mean"] > 0.1  # block ends are forced
    assert summary["simple"]["metrics"]["deterministic_rate"]["worst"] == 0


def test_set_overrides_a_parameter_and_adds_a_design(tmp_path: Path) -> None:
    base, _ = _simulate(tmp_path, "--n", "60")
    runs_csv = tmp_path / "runs.csv"
    changed, _ = _simulate(
        tmp_path, "--n", "60", "--set", "minimization.p=1", "--set", "maximal.b=2",
        "--set", "maximal.block_length=8", "--runs-csv", str(runs_csv),
    )
    assert "minimization (p=1)" in changed and "maximal (b=2, block_length=8)" in changed
    deterministic = changed["minimization (p=1)"]["metrics"]["deterministic_rate"]["mean"]
    assert deterministic > 0.5 > base["minimization (p=0.8)"]["metrics"]["deterministic_rate"][
        "mean"
    ]
    rows = list(csv.DictReader(runs_csv.read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 4 * len(changed)
    maximal = [r for r in rows if r["design"] == "maximal (b=2, block_length=8)"]
    assert len(maximal) == 4
    assert all(float(r["stratum_imbalance_max"]) <= 2 for r in maximal)
    assert all(int(r["n_cogtrain"]) + int(r["n_sham"]) == 60 for r in rows)


def test_prevalences_change_the_strata_filled(tmp_path: Path) -> None:
    summary, _ = _simulate(
        tmp_path, "--n", "80", "--prevalence", "moca_band=moca_18_21:1,moca_22_25:0",
        "--prevalence", "site=BJ01:0.5,SH01:0.5,GZ01:0,HK01:0",
    )
    assert summary["protocol: permuted_block"]["metrics"]["n_strata"]["worst"] == 2


def test_bad_overrides_and_prevalences_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in (
        (["--set", "minimization.p"], "expected METHOD.PARAM=VALUE"),
        (["--set", "minimization.p=2"], "p must be in (0, 1]"),
        (["--set", "efron.q=1"], "unknown parameter(s) q"),
        (["--prevalence", "sex=f:1"], "FACTOR one of moca_band, site"),
        (["--prevalence", "moca_band=moca_18_21:0.5,moca_22_25:0.2"], "must sum to 1"),
    ):
        result = runner.invoke(randomization, ["simulate", MCI, "--runs", "2", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
