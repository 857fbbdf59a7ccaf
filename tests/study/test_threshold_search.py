"""Searching the threshold and per-layer multipliers directly (issue 11): the spec, the trial
configs, the results' derived lambda, the early-stopping grace, and the frontier study files."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from study.results import ResultsWriter
from study.scheduler import default_grace
from study.spec import SpecError, load_spec, parse_spec
from study.storage import StudyLocation
from trainables.config import TrainConfig

STUDIES = Path(__file__).resolve().parents[2] / "studies"
TRAIN = '[train]\ndataset = "synthetic"\nmodel = "lenet5"\nbeta = 0.5\nepochs = 8\n'


def spec_text(params: str, train: str = TRAIN, search: str = "") -> str:
    return f'[study]\nname = "t"\n[search]\n{search}\n{params}\n{train}'


THRESHOLD_AND_MULTIPLIER = """
[search.params.threshold]
low = 0.01
high = 0.1
[search.params."threshold_multipliers.fc1"]
low = 0.5
high = 2.0
"""


def test_a_study_searches_the_threshold_and_a_layer_multiplier_as_flat_params():
    spec = parse_spec(spec_text(THRESHOLD_AND_MULTIPLIER))
    assert [p.name for p in spec.search.params] == ["threshold", "threshold_multipliers.fc1"]
    base = spec.base_config()
    assert "lam" not in base and "threshold" not in base  # each trial derives lam from its threshold
    trial = TrainConfig.from_dict({**base, "threshold": 0.04, "threshold_multipliers.fc1": 1.5})
    assert trial.lam == pytest.approx(0.5 * 0.04 ** 2 / 2)
    assert trial.multipliers == {"fc1": 1.5}


def test_lambda_and_threshold_together_are_refused_naming_both():
    with pytest.raises(SpecError, match="give lam or threshold, not both"):
        parse_spec(spec_text(THRESHOLD_AND_MULTIPLIER, train=TRAIN + "lam = 1e-4\n"))


def test_a_bad_multiplier_value_names_its_search_param():
    bad = '[search.params."threshold_multipliers.fc1"]\nvalues = [0.0, 1.0]\n'
    with pytest.raises(SpecError, match=r"^search.params.threshold_multipliers.fc1: threshold_multipliers.fc1=0.0"):
        parse_spec(spec_text(bad))


@pytest.mark.parametrize("where", ["search", "train"])
def test_a_multiplier_naming_no_layer_is_refused_when_the_study_is_read(where):
    if where == "search":
        text = spec_text('[search.params."threshold_multipliers.fc9"]\nlow = 0.5\nhigh = 2.0\n')
    else:
        text = spec_text("[search.params.lr]\nlow = 1e-3\nhigh = 2e-3\n", train=TRAIN + "threshold = 0.05\n[train.threshold_multipliers]\nconv7 = 2.0\n")
    with pytest.raises(SpecError, match=r"names no sparsified tensor of model='lenet5'; sparsified: conv1.weight"):
        parse_spec(text)


def test_the_results_record_the_derived_lambda_and_each_searched_multiplier(tmp_path):
    spec = parse_spec(spec_text(THRESHOLD_AND_MULTIPLIER))
    base = TrainConfig.from_dict(spec.train).to_dict()
    types = {k: pa.float64() if isinstance(v, float) else pa.string() for k, v in base.items()}
    types["threshold_multipliers.fc1"] = pa.float64()
    location = StudyLocation(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path), True)
    writer = ResultsWriter(location, "t", types, [p.name for p in spec.search.params])
    config = {**spec.base_config(), "threshold": 0.04, "threshold_multipliers.fc1": 1.5}
    row = writer.trial_row(trial_id="a", trial_number=0, state="running", config=config, metrics={},
                           started_at=None, ended_at=None, node=None, device=None)
    assert row["param_lam"] == pytest.approx(0.5 * 0.04 ** 2 / 2)
    assert row["param_threshold"] == 0.04 and row["param_threshold_multipliers.fc1"] == 1.5


@pytest.mark.parametrize("train, search, grace", [
    (TRAIN, "", 2),                                              # constant lr: a quarter of 8
    (TRAIN + 'schedule = "cosine"\n', "", 4),                    # cosine: half
    (TRAIN + 'schedule = "cosine"\nramp_epochs = 4\n', "", 6),   # the ramp, then half the rest
    (TRAIN, "early_stopping_grace_epochs = 1", 1),               # given: kept
])
def test_the_default_grace_follows_the_ramp_and_the_schedule(train, search, grace):
    spec = parse_spec(spec_text("[search.params.lr]\nlow = 1e-4\nhigh = 1e-2\n", train=train, search=search))
    given = spec.search.early_stopping_grace_epochs
    assert (given if given is not None else default_grace(spec)) == grace


@pytest.mark.parametrize("name", sorted(p.stem for p in STUDIES.glob("frontier_*.toml")))
def test_the_frontier_study_files_parse_and_use_the_new_options(name):
    spec = load_spec(STUDIES / f"{name}.toml")
    searched = {p.name for p in spec.search.params}
    config = TrainConfig.from_dict(spec.train)
    assert "threshold" in searched or config.threshold > 0  # searched, or fixed at a front point
    assert any(n.startswith("threshold_multipliers.") for n in searched) or config.multipliers
    assert config.threshold_scale == "std" and config.ramp_epochs > 0 and config.finetune_epochs > 0
    assert spec.study.name == name


# What each ablation variant changes against studies/ablation_lenet5_full.toml (issue 11).
ABLATION_CHANGES = {
    "classic": {"rule": "classic"},
    "no_ramp": {"ramp_epochs": 0},
    "no_finetune": {"finetune_epochs": 0, "epochs": 16},
    "std": {"threshold_multipliers": {}},
    "fan_in": {"threshold_multipliers": {}, "threshold_scale": "fan_in"},
    "global": {"threshold_multipliers": {}, "threshold_scale": "global"},
    "searched": {"threshold_multipliers": {}},
    "none": {"threshold_multipliers": {}, "threshold_scale": "global", "rule": "classic",  # before issue 11
             "ramp_epochs": 0, "finetune_epochs": 0, "epochs": 16},
}


def test_the_ablation_variants_cover_the_issue_and_no_other_file_is_one():
    assert sorted(p.stem.removeprefix("ablation_lenet5_") for p in STUDIES.glob("ablation_lenet5_*.toml")) == \
        sorted([*ABLATION_CHANGES, "full"])


@pytest.mark.parametrize("variant", sorted(ABLATION_CHANGES))
def test_each_ablation_variant_has_the_same_budget_and_changes_what_it_names(variant):
    full = load_spec(STUDIES / "ablation_lenet5_full.toml")
    spec = load_spec(STUDIES / f"ablation_lenet5_{variant}.toml")
    assert spec.study.name == f"ablation_lenet5_{variant}"
    for s in (full, spec):  # the same budget: trials, epochs of training, no early stopping
        assert (s.study.trials, s.search.early_stopping) == (6, False)
        assert s.train["epochs"] + s.train["finetune_epochs"] == 16
    assert {k: v for k, v in spec.train.items() if full.train.get(k) != v} | \
        {k: {} for k in full.train if k not in spec.train} == ABLATION_CHANGES[variant]
    searched = {p.name for p in spec.search.params}
    if variant == "searched":
        assert searched == {"threshold", *(f"threshold_multipliers.{n}" for n in ("conv1", "conv2", "fc1", "fc2"))}
    else:
        assert searched == {"threshold"} and spec.search.sampler == "grid"
        assert len(spec.search.params[0].values) == 6


@pytest.mark.parametrize("variant", ["full", "global"])
def test_the_seed_replicas_train_as_their_ablation_variant_at_two_of_its_thresholds(variant):
    base = load_spec(STUDIES / f"ablation_lenet5_{variant}.toml")
    spec = load_spec(STUDIES / f"ablation_seeds_lenet5_{variant}.toml")
    assert spec.train == {k: v for k, v in base.train.items() if k != "seed"}
    params = {p.name: p.values for p in spec.search.params}
    assert params["seed"] == (1, 2) and set(params["threshold"]) < set(base.search.params[0].values)
    assert (spec.study.trials, spec.search.early_stopping) == (4, False)


def test_a_study_searching_the_threshold_records_lambda_multipliers_and_layer_thresholds(ray_session, tmp_path):
    import json

    import pandas as pd

    from study.cli import main
    path = tmp_path / "thr.toml"
    path.write_text(f'''
[study]
name = "thr"
storage = "{tmp_path / 'studies'}"
trials = 2
max_concurrent = 2
[search]
sampler = "random"
early_stopping = false
[search.params.threshold]
low = 0.01
high = 0.05
[search.params.beta]
low = 0.5
high = 2.0
[search.params."threshold_multipliers.fc1"]
low = 0.5
high = 2.0
[train]
dataset = "synthetic"
synthetic_size = 300
val_size = 100
model = "lenet300_100"
epochs = 2
ramp_epochs = 1
finetune_epochs = 1
batch_size = 64
eval_batch_size = 500
''')
    assert main(["run", str(path)]) == 0
    trials = pd.read_parquet(tmp_path / "studies" / "thr" / "results" / "trials")
    assert len(trials) == 2 and (trials["state"] == "finished").all()
    assert list(trials["param_lam"]) == pytest.approx(list(trials["param_beta"] * trials["param_threshold"] ** 2 / 2))
    assert trials["param_threshold_multipliers.fc1"].between(0.5, 2.0).all()
    assert (trials["epochs_completed"] == 3).all()  # 2 RVSM epochs, then 1 of fine-tuning
    for _, row in trials.iterrows():
        per = json.loads(row["metric_layer_threshold_json"])
        assert per["fc1.weight"] == pytest.approx(row["param_threshold"] * row["param_threshold_multipliers.fc1"])
        assert per["fc2.weight"] == pytest.approx(row["param_threshold"])
