"""The study file: defaults, overrides, the stored copy, and every sampler buildable."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from study import search
from study.spec import (SAMPLERS, SpecError, apply_override, dump_toml, load_spec, loads, parse_spec,
                        spec_from_raw)
from tests.study.conftest import study_text
from trainables import PRESETS, TrainConfig


def test_defaults_search_lambda_beta_and_lr_on_log_scales():
    spec = parse_spec('[study]\nname = "d"\n')
    assert [(p.name, p.log) for p in spec.search.params] == [("lam", True), ("beta", True), ("lr", True)]
    assert [(o.metric, o.direction) for o in spec.search.objectives] == [("val_acc", "max"),
                                                                        ("sparsity", "max")]
    assert spec.search.sampler == "tpe" and spec.cluster.address is None
    assert spec.search.early_stopping and spec.search.early_stopping_min_dominating == 2


def test_the_stored_copy_parses_to_the_same_spec(tmp_path):
    raw = loads(study_text("copy", tmp_path, extra='[search.params.sparsify]\nvalues = ["all", "fc1"]\n'))
    apply_override(raw, "train.epochs=5")
    apply_override(raw, 'train.data_root="/data/with \\"quotes\\""')
    again = loads(dump_toml(raw))
    assert again == raw
    assert spec_from_raw(again) == spec_from_raw(raw)
    assert spec_from_raw(raw).train["epochs"] == 5


def test_list_valued_choices_are_refused(tmp_path):
    with pytest.raises(SpecError, match="search.params.sparsify.values"):
        parse_spec(study_text("l", tmp_path, extra='[search.params.sparsify]\nvalues = [["fc1.weight"]]\n'))


def test_override_needs_key_and_value():
    with pytest.raises(SpecError, match="KEY=VALUE"):
        apply_override({}, "train.epochs")


def test_override_never_replaces_a_whole_section(tmp_path):
    """`--set study={name='x'}` would reset storage, trials ... to their defaults without a word."""
    raw = loads(study_text("whole", tmp_path))
    with pytest.raises(SpecError, match=r"replace the whole \[study\] table.*--set study.KEY=VALUE"):
        apply_override(raw, "study={name='x'}")
    apply_override(raw, "search.params.lam={values=[1e-5, 1e-4]}")  # one parameter: replaced
    assert raw["search"]["params"]["lam"] == {"values": [1e-5, 1e-4]}


def test_objectives_with_directions():
    spec = parse_spec('[study]\nname = "o"\n[search]\nobjectives = ["val_acc", "compression", "epoch_time_s:min"]\n')
    assert [(o.metric, o.direction) for o in spec.search.objectives] == [
        ("val_acc", "max"), ("compression", "max"), ("epoch_time_s", "min")]


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
def test_every_sampler_proposes_points_inside_the_ranges(sampler, tmp_path):
    spec = parse_spec(study_text("s", tmp_path, sampler=sampler))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=search.make_sampler(spec))
    space = search.search_space(spec)
    for i in range(3):
        trial = study.ask(fixed_distributions=space)
        assert 1e-6 <= trial.params["lam"] <= 1e-2 and 0.1 <= trial.params["beta"] <= 10
        study.tell(trial, [0.5 + 0.1 * i, 0.2 * i])


def test_grid_sampler_needs_values(tmp_path):
    with pytest.raises(SpecError, match="grid sampler needs 'values"):
        parse_spec(study_text("g", tmp_path, sampler="grid"))
    text = study_text("g", tmp_path, sampler="grid", trials=4).split("[search.params.lam]")[0]
    text += '[search.params.lam]\nvalues = [0.0, 1e-4]\n[search.params.rule]\nvalues = ["classic", "modified"]\n'
    spec = parse_spec(text)
    assert isinstance(search.make_sampler(spec), optuna.samplers.GridSampler)


STUDY_FILES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_every_shipped_study_file_is_valid(path):
    spec = load_spec(path)
    assert spec.study.name == path.stem
    TrainConfig.from_dict(spec.base_config())  # the fixed fields make a valid training config


def test_the_notebook_study_is_one_fixed_trial_with_the_notebooks_values():
    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "notebook.toml")
    assert spec.study.trials == 1 and spec.search.sampler == "grid"
    searched = {p.name: p.values for p in spec.search.params}
    assert searched == {"lam": (5e-4,), "beta": (0.1,), "lr": (1e-3,)}
    assert {k: v for k, v in spec.base_config().items() if k in PRESETS["notebook"]} == {
        k: v for k, v in PRESETS["notebook"].items() if k not in ("lam", "beta", "lr")}
