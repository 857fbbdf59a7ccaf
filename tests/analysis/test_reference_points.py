"""Reference results files: TOML and CSV, shipped anchors, clear errors."""
from __future__ import annotations

import pytest

from analysis.errors import AnalysisError
from analysis.reference_points import Reference, read_references, shipped_references


def test_shipped_anchors():
    assert {"mnist_lenet5", "mnist_lenet300_100", "notebook"} <= set(shipped_references())
    lenet5 = {r.name: r for r in read_references("mnist_lenet5")}
    assert lenet5["Han et al. 2015"].accuracy == pytest.approx(0.9923)
    assert lenet5["Han et al. 2015"].sparsity == pytest.approx(1 - 1 / 12)
    assert lenet5["Dynamic Network Surgery"].sparsity == pytest.approx(1 - 1 / 108)
    assert lenet5["Sparse VD"].sparsity == pytest.approx(1 - 1 / 280)
    lenet300 = {r.name: r for r in read_references("mnist_lenet300_100")}
    assert lenet300["Sparse VD"].accuracy == pytest.approx(1 - 0.0192)
    (notebook,) = read_references("notebook")
    assert (notebook.accuracy, notebook.sparsity) == (0.9648, 0.0797)


def test_csv(tmp_path):
    path = tmp_path / "refs.csv"
    path.write_text("name,accuracy,sparsity,compression,error\nmine,0.98,0.9,,\nyours,,,10,0.02\n")
    assert read_references(str(path)) == (Reference("mine", 0.98, 0.9), Reference("yours", 0.98, 0.9))


@pytest.mark.parametrize("text, message", [
    ('[[reference]]\naccuracy = 0.9\nsparsity = 0.5\n', "no name"),
    ('[[reference]]\nname = "x"\naccuracy = 0.9\n', "sparsity or compression"),
    ('[[reference]]\nname = "x"\naccuracy = 0.9\nerror = 0.1\nsparsity = 0.5\n', "accuracy or error"),
    ('[[reference]]\nname = "x"\naccuracy = 90\nsparsity = 0.5\n', "must be fractions"),
    ('[[reference]]\nname = "x"\naccuracy = "high"\nsparsity = 0.5\n', "is not a number"),
    ('[[reference]\n', "refs.toml"),
])
def test_errors_name_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "refs.toml"
    path.write_text(text)
    with pytest.raises(AnalysisError, match=message):
        read_references(str(path))


def test_missing_file():
    with pytest.raises(AnalysisError, match="cannot read references nope.toml"):
        read_references("nope.toml")
