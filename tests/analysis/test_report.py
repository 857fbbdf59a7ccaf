"""report.md: chance-level trials are marked in the front table and kept out of the trade-offs."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis.load import load_results
from analysis.objectives import DEFAULT_OBJECTIVES
from analysis.report import write_report
from analysis.summary import at_chance, chance_accuracy_of, summarise

ROWS = [
    {"lam": 1e-5, "val_acc": 0.9914, "test_acc": 0.9928, "sparsity": 0.7957, "nonzeros": 12607},
    {"lam": 4e-5, "val_acc": 0.9848, "test_acc": 0.9887, "sparsity": 0.974, "nonzeros": 1604},
    {"lam": 1e-3, "val_acc": 0.094, "test_acc": 0.0958, "sparsity": 0.999, "nonzeros": 62},  # collapsed
    {"lam": 2e-3, "val_acc": 0.1135, "test_acc": 0.1135, "sparsity": 0.9996, "nonzeros": 25},  # one class
]


def report_of(make_study, tmp_path, rows=ROWS) -> str:
    trials = load_results([str(make_study("s", rows))]).trials
    (summary,) = summarise(trials, DEFAULT_OBJECTIVES)
    return write_report(summary, trials, tmp_path / "report").read_text()


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_front_rows_at_chance_level_are_marked(make_study, tmp_path):
    front = section(report_of(make_study, tmp_path), "Pareto front")
    rows = [line for line in front.splitlines() if line.startswith("| `t")]
    assert [("(chance)" in row) for row in rows] == [False, False, True]  # t0002 is dominated by t0003
    assert "| 11.35% (chance) |" in rows[2] and "| 12,607 |" in rows[0]
    assert "at chance level (validation accuracy at most 1.5 × 10%" in front


def test_best_trade_offs_leave_chance_level_trials_out(make_study, tmp_path):
    queries = section(report_of(make_study, tmp_path), "Best trade-offs")
    assert "(2 finished trials at chance level left out)" in queries
    assert "`t0002`" not in queries and "`t0003`" not in queries
    assert "| ≥ 99.0% | none |" in queries and "| ≥ 90.0% | `t0001` |" in queries


def test_nothing_is_marked_when_no_trial_collapsed_or_the_chance_level_is_unknown(make_study, tmp_path):
    text = report_of(make_study, tmp_path, ROWS[:2])
    assert "(chance) |" not in section(text, "Pareto front")
    assert "at chance level left out" not in section(text, "Best trade-offs")
    trials = pd.DataFrame({"param_dataset": ["imagenet"], "metric_val_acc": [0.01]})
    assert chance_accuracy_of(trials) is None and not at_chance(trials["metric_val_acc"], None).any()
    from_config = pd.DataFrame({"config_json": ['{"dataset": "fashion_mnist"}'], "metric_val_acc": [0.12]})
    assert chance_accuracy_of(from_config) == 0.1 and at_chance(from_config["metric_val_acc"], 0.1).all()


def test_the_report_writes_the_front_as_csv_with_every_searched_parameter(make_study, tmp_path):
    report_of(make_study, tmp_path)
    front = pd.read_csv(tmp_path / "report" / "front.csv")
    assert list(front.columns)[:1] == ["trial_id"] and "param_lam" in front.columns
    for column in ("metric_threshold", "metric_val_acc", "metric_test_acc", "metric_sparsity",
                   "metric_compression", "metric_nonzeros"):
        assert column in front.columns
    trials = load_results([str(tmp_path / "s")]).trials
    (summary,) = summarise(trials, DEFAULT_OBJECTIVES)
    assert list(front["trial_id"]) == list(summary.front["trial_id"])
    assert list(front["metric_sparsity"]) == pytest.approx(list(summary.front["metric_sparsity"]))


def test_the_front_table_shows_searched_layer_multipliers_and_not_fixed_fields(make_study, tmp_path):
    searched = ("threshold", "threshold_multipliers.fc1", "lr")
    rows = [{**row, "threshold": t, "threshold_multipliers.fc1": m}
            for row, t, m in zip(ROWS[:2], (3.0, 4.0), (1.5, 2.25))]
    trials = load_results([str(make_study("s", rows, searched=searched))]).trials
    (summary,) = summarise(trials, DEFAULT_OBJECTIVES)
    front = section(write_report(summary, trials, tmp_path / "report").read_text(), "Pareto front")
    heading = front.splitlines()[front.splitlines().index("") + 3]
    assert "| lr | m fc1 | threshold |" in heading and heading.count("threshold") == 1
    assert "rule" not in heading and "dataset" not in heading
    assert "| 1.5 |" in front and "| 2.25 |" in front
