"""What a reader of the front and parameter plots is promised: a zoomed accuracy axis with the
collapsed trials counted on its bottom edge, references labelled as published test accuracy with
leader lines that do not cross, the knee's legend marker away from the data, log axes for
parameters searched on a log scale."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.text import Annotation, Text

from analysis.load import load_results
from analysis.objectives import DEFAULT_OBJECTIVES
from analysis.plot_front import BELOW_GID, REFERENCE_LABEL, draw_front, front_plot_info
from analysis.plot_params import draw_params, params_plot_info
from analysis.plot_style import new_figure, place_labels, segments_cross
from analysis.reference_points import Reference
from analysis.study_file import DEFAULT_LOG_SCALES, log_scales
from analysis.summary import summarise

USEFUL = [
    {"lam": 1e-5, "lr": 1e-3, "val_acc": 0.9914, "sparsity": 0.80},
    {"lam": 2e-5, "lr": 2e-3, "val_acc": 0.9896, "sparsity": 0.93},
    {"lam": 4e-5, "lr": 1.5e-3, "val_acc": 0.9848, "sparsity": 0.974},
    {"lam": 3e-5, "lr": 1.2e-3, "val_acc": 0.9870, "sparsity": 0.90},
]
COLLAPSED = [  # a network that predicts one class scores that class's share of the images
    {"lam": 1e-3, "lr": 1e-3, "val_acc": 0.1135, "sparsity": 0.9996},
    {"lam": 9e-4, "lr": 2e-3, "val_acc": 0.094, "sparsity": 0.998},
    {"lam": 2e-4, "lr": 2e-3, "val_acc": 0.42, "sparsity": 0.95},  # far below, above chance
]
DENSE_REFERENCES = tuple(Reference(f"method {i}", 0.990 + 0.0004 * (i % 3), s)
                         for i, s in enumerate((0.90, 0.905, 0.91, 0.915, 0.92, 0.93)))


def summaries_of(make_study, rows, name="s", **kwargs):
    return summarise(load_results([str(make_study(name, rows, **kwargs))]).trials, DEFAULT_OBJECTIVES)


def test_the_accuracy_axis_zooms_to_the_useful_trials_and_counts_the_collapsed_ones(make_study):
    info = front_plot_info(summaries_of(make_study, USEFUL + COLLAPSED))
    low, top = info.y_range
    assert top == 0.9914 and 0.97 < low < 0.9848  # room below the lowest useful front point
    (study,) = info.studies
    assert (study.below, study.at_chance, info.chance) == (3, 2, 0.1)
    ax = draw_front(info).axes[0]
    assert ax.get_ylim()[0] == pytest.approx(100 * low)
    (edge,) = [c for c in ax.collections if c.get_gid() == BELOW_GID]
    np.testing.assert_allclose(np.asarray(edge.get_offsets()), [[0.9996, 0], [0.998, 0], [0.95, 0]])
    labels = _legend_labels(ax.figure)
    assert f"3 trials below {100 * low:.1f}% (2 at chance level), drawn on the bottom edge" in labels


def test_y_min_zero_shows_every_trial(make_study):
    info = front_plot_info(summaries_of(make_study, USEFUL + COLLAPSED), y_min=0)
    assert info.y_range == (0.0, 0.9914) and info.studies[0].below == 0


def test_references_say_they_are_published_test_accuracy_and_their_leaders_do_not_cross(make_study):
    info = front_plot_info(summaries_of(make_study, USEFUL), references=DENSE_REFERENCES)
    figure = draw_front(info)
    assert REFERENCE_LABEL == "reference results (test accuracy, published)"
    assert REFERENCE_LABEL in _legend_labels(figure)
    ax = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    leaders = []
    for annotation in (t for t in ax.texts if isinstance(t, Annotation)):
        anchor = ax.transData.transform(annotation.xy)
        box = Text.get_window_extent(annotation, renderer)
        end = np.clip(anchor, [box.x0, box.y0], [box.x1, box.y1])
        leaders.append((annotation.get_text(), anchor, end))
    assert sorted(name for name, _, _ in leaders) == sorted(r.name for r in DENSE_REFERENCES)
    for (a, a0, a1), (b, b0, b1) in itertools.combinations(leaders, 2):
        assert not segments_cross(a0, a1, b0, b1), f"leader lines of {a} and {b} cross"


def test_the_knee_ring_is_drawn_on_the_knee_and_the_legend_sits_outside_the_axes(make_study, rvsm_rows):
    info = front_plot_info(summaries_of(make_study, rvsm_rows(300)))
    figure = draw_front(info)
    ax = figure.axes[0]
    knee = [c for c in ax.collections if c.get_label() == "knee"]
    assert len(knee) == 1
    np.testing.assert_allclose(knee[0].get_offsets(), [[info.studies[0].knee[0], 100 * info.studies[0].knee[1]]])
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert _legend_labels(figure).count("knee") == 1


def test_a_parameter_searched_on_a_log_scale_gets_a_log_axis_labelled_once(make_study, tmp_path):
    rows = [dict(r, beta=b) for r, b in zip(USEFUL, (2.0, 3.0, 4.0, 5.0))]  # within a decade
    folder = make_study("s", rows, searched=("lam", "lr", "beta"))
    (folder / "study.toml").write_text(
        "[search.params.lam]\nlow = 1e-6\nhigh = 1e-3\nlog = false\n"
        "[search.params.beta]\nlow = 1.0\nhigh = 10.0\nlog = true\n"
        "[search.params.lr]\nvalues = [1e-3, 1.2e-3, 1.5e-3, 2e-3]\n")
    scales = log_scales(str(folder))
    assert scales == {"lam": False, "beta": True}  # a list of values has no scale
    summaries = summarise(load_results([str(folder)]).trials, DEFAULT_OBJECTIVES)
    info = params_plot_info(summaries, log_scales=scales)
    assert [(p.column, p.scale) for p in info.params] == [
        ("param_beta", "log"), ("param_lam", "linear"), ("param_lr", "linear")]
    figure = draw_params(info)
    labels = [ax.get_xlabel() for ax in figure.axes if ax.get_xlabel()]
    assert labels == ["β (beta), log scale", "λ (lam)", "learning rate"]
    assert [ax.get_xscale() for ax in figure.axes[-3:]] == ["log", "linear", "linear"]


def test_the_study_file_is_optional_and_its_default_space_is_the_runners(make_study, tmp_path):
    folder = make_study("s", USEFUL)
    assert log_scales(str(folder)) is None  # copied results without their study file
    (folder / "study.toml").write_text("[study]\nname = 's'\n")
    assert log_scales(str(folder)) == DEFAULT_LOG_SCALES
    (folder / "study.toml").write_text("not toml [")
    assert log_scales(str(folder)) is None
    spec = pytest.importorskip("study.spec")
    assert {name: t["log"] for name, t in spec._default_params().items()} == DEFAULT_LOG_SCALES


def _legend_labels(figure) -> list[str]:
    return [t.get_text() for legend in figure.legends for t in legend.get_texts()]


def test_label_placement_keeps_leader_lines_of_a_tight_cluster_apart():
    # eight labels in a small patch: placed nearest-first alone, three of their leaders cross
    points = [(0.586, 0.478), (0.594, 0.37), (0.502, 0.444), (0.55, 0.394), (0.568, 0.486), (0.576, 0.469),
              (0.458, 0.547), (0.596, 0.442)]
    figure = new_figure((600, 400))
    ax = figure.add_subplot()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    place_labels(ax, [(x, y, f"Reference {i}") for i, (x, y) in enumerate(points)])
    renderer = figure.canvas.get_renderer()
    leaders = []
    for annotation in ax.texts:
        anchor = ax.transData.transform(annotation.xy)
        box = Text.get_window_extent(annotation, renderer)
        leaders.append((anchor, np.clip(anchor, [box.x0, box.y0], [box.x1, box.y1])))
        assert ax.get_window_extent(renderer).contains(box.x0, box.y0)
    assert len(leaders) == 8
    assert not any(segments_cross(a0, a1, b0, b1) for (a0, a1), (b0, b1) in itertools.combinations(leaders, 2))
