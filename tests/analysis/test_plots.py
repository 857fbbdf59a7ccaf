"""Plots: the computed info objects are compared; the drawings are only smoke-rendered."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.load import load_results
from analysis.objectives import DEFAULT_OBJECTIVES, parse_objectives
from analysis.plot_front import FrontPlotInfo, StudyFrontInfo, draw_front, front_plot_info
from analysis.plot_params import ParamAxis, draw_params, params_plot_info
from analysis.plot_progress import draw_progress, progress_plot_info
from analysis.plot_style import log_ticks, save_figure, sparsity_coordinate
from analysis.reference_points import Reference
from analysis.summary import summarise

ROWS = [
    {"lam": 1e-5, "val_acc": 0.99, "sparsity": 0.5, "threshold": 0.001, "test_acc": 0.5},
    {"lam": 1e-4, "val_acc": 0.98, "sparsity": 0.9, "threshold": 0.01},
    {"lam": 1e-3, "val_acc": 0.97, "sparsity": 0.8, "threshold": 0.005, "test_acc": 0.999},
    {"lam": 1e-2, "val_acc": 0.95, "sparsity": 0.99, "threshold": 0.1},
    {"state": "running"},
    {"lam": 0.0, "val_acc": 0.992, "sparsity": 0.0, "threshold": 0.0},
]


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.fixture
def summaries(make_study):
    return summarise(load_results([str(make_study("s", ROWS))]).trials, DEFAULT_OBJECTIVES)


def test_front_info(summaries):
    info = front_plot_info(summaries, x_axis="logit")
    assert info == FrontPlotInfo(
        studies=(StudyFrontInfo(
            study="s",
            label="s: 5 finished (1 running not shown)",
            trial_ids=("t0000", "t0001", "t0002", "t0003", "t0005"),
            x=(0.5, 0.9, 0.8, 0.99, 0.0),
            y=(0.99, 0.98, 0.97, 0.95, 0.992),
            colors=(0.001, 0.01, 0.005, 0.1, 0.0),
            front=((0.0, 0.992), (0.5, 0.99), (0.9, 0.98), (0.99, 0.95)),
            knee=(0.9, 0.98),
            baseline=0.992,
            off_axis=1,  # 0% sparsity has no place on a logit axis
        ),),
        x_axis="logit",
        x_label="sparsity (%, logit scale)",
        y_label="validation accuracy (%)",
        color_by="metric_threshold",
        color_label="threshold √(2λ/β)",
        color_log=True,
        step=True,
        title="Accuracy–sparsity front: s",
        # no trial collapsed: the lowest front point (95%) less 15% of its distance to the top
        y_range=(pytest.approx(0.95 - 0.15 * (0.992 - 0.95)), 0.992),
        chance=0.1,
    )


@pytest.mark.parametrize("scales, label", [
    (["std"], "threshold t (× each tensor's initial std)"),
    (["fan_in"], "threshold t (× each tensor's 1/√fan-in)"),
    (["global"], "threshold √(2λ/β)"),
    (["std", "global"], "threshold t (units differ: threshold_scale global / std)"),
])
def test_the_colour_bar_names_the_thresholds_unit(make_study, scales, label):
    rows = [{**row, "threshold_scale": scales[i % len(scales)]} for i, row in enumerate(ROWS)]
    study = make_study("s", rows, searched=("lam", "beta", "lr", "threshold_scale"))
    trials = load_results([str(study)]).trials
    assert front_plot_info(summarise(trials, DEFAULT_OBJECTIVES)).color_label == label


def test_front_info_options(summaries):
    references = (Reference("Han et al. 2015", 0.9923, 1 - 1 / 12),)
    info = front_plot_info(summaries, x_axis="compression", color_by="lam", baseline=99.2,
                           references=references, y_min=0.96)
    assert (info.color_by, info.color_log, info.baseline, info.y_min) == ("param_lam", True, 0.992, 0.96)
    assert info.studies[0].off_axis == 0 and info.references == references
    assert info.x_label == "compression 1/(1 − sparsity) (×, log scale)"
    with pytest.raises(AnalysisError, match="no such column"):
        front_plot_info(summaries, color_by="nope")
    with pytest.raises(AnalysisError, match="--baseline 250"):
        front_plot_info(summaries, baseline=250)


def test_test_accuracy_never_chooses_the_front(summaries):
    # t0002 has the best test accuracy but is dominated on validation accuracy and sparsity.
    assert "t0002" not in summaries[0].front["trial_id"].tolist()
    with pytest.raises(AnalysisError, match="test accuracy"):
        parse_objectives(["test_acc", "sparsity"])


def test_three_objectives_mark_the_front_without_a_staircase(make_study):
    times = [3.0, 2.0, 0.5, 4.0, None, 5.0]
    rows = [dict(r, epoch_time_s=t) for r, t in zip(ROWS, times)]
    trials = load_results([str(make_study("s3", rows))]).trials
    objectives = parse_objectives(["val_acc", "sparsity", "epoch_time_s"])
    info = front_plot_info(summarise(trials, objectives))
    assert not info.step and info.studies[0].knee is None
    assert len(info.studies[0].front) == 5  # t0002, dominated in 2-D, is the fastest
    assert info.title == "Front of (val_acc, sparsity, epoch_time_s): s3"
    objectives = parse_objectives(["val_acc", "sparsity", "samples_per_s:max"])
    with pytest.raises(AnalysisError, match="no finished trial has a value for samples_per_s"):
        summarise(trials, objectives)


def test_several_studies(make_study, tmp_path):
    a = make_study("a", ROWS)
    b = make_study("b", ROWS[:4])
    info = front_plot_info(summarise(load_results([str(a), str(b)]).trials, DEFAULT_OBJECTIVES))
    assert [s.study for s in info.studies] == ["a", "b"]
    assert info.color_by == "study" and info.studies[1].colors == ()
    assert info.title == "Accuracy–sparsity front: 2 studies"
    path = save_figure(draw_front(info, size_px=(640, 480), dpi=80), tmp_path / "two.png")
    assert png_size(path) == (640, 480)


def test_the_legend_of_many_long_named_studies_fits_the_figure(make_study, tmp_path):
    folders = [str(make_study(f"a_rather_long_study_name_as_on_a_cluster_number_{n}", ROWS[:4])) for n in range(6)]
    info = front_plot_info(summarise(load_results(folders).trials, DEFAULT_OBJECTIVES))
    figure = draw_front(info, size_px=(1000, 700))
    (legend,) = figure.legends
    box = legend.get_window_extent(figure.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= figure.bbox.width
    assert legend._ncols < 3


def test_progress_info(summaries):
    info = progress_plot_info(summaries)
    (study,) = info.studies
    assert study.trial_numbers == (0, 1, 2, 3, 5)
    expected = [0.89 * 0.5, 0.89 * 0.5 + 0.88 * 0.4, 0.797, 0.8735, 0.8735]
    expected[1] = 0.88 * 0.9 + 0.01 * 0.5
    assert study.hypervolumes == pytest.approx(expected)
    assert study.reference == (0.1, 0.0)
    assert info.reference_text == "val_acc 10%, sparsity 0%"


def test_params_info(summaries):
    info = params_plot_info(summaries)
    assert info.params == (
        ParamAxis("param_beta", "β (beta)", "linear"),
        ParamAxis("param_lam", "λ (lam)", "log", zero_at=1e-6),  # 0 drawn a decade below 1e-5
        ParamAxis("param_lr", "learning rate", "linear"),
    )
    assert info.objectives == (
        ("val_acc", "validation accuracy (%)", "percent"), ("sparsity", "sparsity (%)", "sparsity")
    )
    assert info.studies[0].x[1] == (1e-5, 1e-4, 1e-3, 1e-2, 0.0)
    assert info.studies[0].on_front == (True, True, False, True, True)


@pytest.mark.parametrize("x_axis", ["logit", "sparsity", "compression"])
def test_rendered_front_has_the_requested_size(summaries, tmp_path, x_axis):
    references = (Reference("A", 0.99, 0.9), Reference("B", 0.991, 0.91), Reference("C", 0.95, 0.999))
    info = front_plot_info(summaries, x_axis=x_axis, references=references, y_axis="logit")
    assert png_size(save_figure(draw_front(info, size_px=(800, 600)), tmp_path / "f.png")) == (800, 600)


def test_rendered_svg_progress_and_params(summaries, tmp_path):
    svg = save_figure(draw_front(front_plot_info(summaries, y_min=0.96)), tmp_path / "f.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    progress = draw_progress(progress_plot_info(summaries), size_px=(500, 300))
    assert png_size(save_figure(progress, tmp_path / "p.png")) == (500, 300)
    params = draw_params(params_plot_info(summaries), size_px=(900, 600))
    assert png_size(save_figure(params, tmp_path / "q.png")) == (900, 600)


def test_bad_output_and_size(summaries, tmp_path):
    info = front_plot_info(summaries)
    with pytest.raises(AnalysisError, match="extension"):
        save_figure(draw_front(info), tmp_path / "front.jpeg")
    with pytest.raises(AnalysisError, match="100 to 10,000 px a side"):
        draw_front(info, size_px=(50, 50))
    with pytest.raises(AnalysisError, match="100 to 10,000 px a side"):
        draw_front(info, size_px=(100_000, 100_000))


def test_axis_helpers():
    s = np.array([0.0, 0.5, 0.9, 0.99, 1.0])
    np.testing.assert_allclose(sparsity_coordinate(s, "sparsity"), [0, 50, 90, 99, 100])
    np.testing.assert_allclose(sparsity_coordinate(s, "compression"), [1, 2, 10, 100, np.nan])
    np.testing.assert_allclose(sparsity_coordinate(s, "logit"), [np.nan, 0.5, 0.9, 0.99, np.nan])
    assert log_ticks(1e-4, 1e-1) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert log_ticks(1.3e-4, 9e-3) == [3e-4, 1e-3, 3e-3]
    # a range that holds no 1-2-5 value (a narrow search) is labelled at its ends
    assert log_ticks(1.51e-5, 1.57e-5) == [1.51e-5, 1.57e-5]
    assert log_ticks(0.0016, 0.0016) == [0.0016]
