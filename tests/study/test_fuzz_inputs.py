"""A fuzz campaign over study files, run through the command line in-process: every key of a
complete study file is given a wrong type, NaN, infinities, a negative number, zero, a huge
number, an empty or very long string, or bytes that are not UTF-8; every table gets an unknown
key and is malformed. Each input must end in exit status 2 with exactly one line on stderr that
names the key, no traceback, and nothing written; the few legal values among the mutations must
parse and reach the point where Ray would start (a stand-in that stops there). Deterministic: the
mutations are enumerated, not drawn."""
from __future__ import annotations

import collections
import copy
import sys
import types

import pytest
import tomli_w

import study
from study.cli import main
from study.spec import loads, spec_from_raw
from tests.study.conftest import study_text

EXTRA = """
[search.params.momentum]
values = [0.5, 0.9]

[resources]
cpus_per_trial = 1.0
gpus_per_trial = 0.0

[cluster]
address = "auto"
connect_timeout_s = 30.0
"""
EXTRA_TRAIN = """data_root = "data"
seed = 0
data_seed = 0
max_steps = 0
train_subset = 0
weight_decay = 0.0
dropout = 0.0
device = "cpu"
sparsify = "all"
optimizer = "sgd"
"""
PLACEHOLDER = "\ue000"  # replaced by bytes that are not UTF-8
BAD_BYTES = b"\xff\xfe"

# (key, kind) mutations that are legal values: they must parse and reach Ray's start.
LEGAL = {
    ("study.seed", "zero"), ("search.early_stopping_grace_epochs", "zero"),
    ("resources.gpus_per_trial", "zero"), ("cluster.address", "empty"),
    ("train.seed", "zero"), ("train.data_seed", "zero"), ("train.max_steps", "zero"),
    ("train.train_subset", "zero"), ("train.weight_decay", "zero"), ("train.dropout", "zero"),
    ("train.weight_decay", "huge"),
    ("search.params.lam.high", "huge"), ("search.params.beta.high", "huge"),
    ("search.params.lr.high", "huge"),
}


class RayWouldStart(Exception):
    """Raised by the stand-in for study.launch.connect: the input passed every check."""


def _base() -> dict:
    raw = loads(study_text("fuzz", "STORAGE", extra=EXTRA) + EXTRA_TRAIN)
    raw["search"].update(objectives=["val_acc", "sparsity"], early_stopping_min_dominating=2,
                         early_stopping_grace_epochs=1)
    return raw


def _leaves(table: dict, prefix: str = ""):
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _tables(table: dict, prefix: str = ""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield f"{prefix}{key}"
            yield from _tables(value, f"{prefix}{key}.")


def _set(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    *tables, last = path.split(".")
    target = raw
    for name in tables:
        target = target[name]
    target[last] = value
    return raw


def _values(value) -> list[tuple[str, object]]:
    """The kinds of bad (and some legal) values a key of this type is given."""
    wrong = 7 if isinstance(value, str) else [1, 2] if isinstance(value, bool) else "seven"
    kinds = [("wrong type", wrong), ("table", {"a": 1}), ("non-UTF-8", PLACEHOLDER),
             ("empty", ""), ("very long", "a" * 5000), ("over NAME_MAX", "b" * 300)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kinds += [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]
        if isinstance(value, int):
            kinds += [("negative", -1), ("zero", 0), ("huge", 2**63 - 1)]
        else:
            kinds += [("negative", -1.0), ("zero", 0.0), ("huge", 1e308)]
    return kinds


def mutations() -> list[tuple[str, str, str, bytes]]:
    """(id, key, kind, file bytes) for every mutation, in a fixed order."""
    base = _base()
    out = []

    def add(key: str, kind: str, raw: dict | None = None, data: bytes | None = None) -> None:
        if data is None:
            data = tomli_w.dumps(raw).encode("utf-8").replace(PLACEHOLDER.encode("utf-8"), BAD_BYTES)
        out.append((f"{key}:{kind}:{len(out)}", key, kind, data))

    for key, value in _leaves(base):
        for kind, bad in _values(value):
            add(key, kind, _set(base, key, bad))
    for table in _tables(base):
        add(f"{table}.bogus_key", "unknown key", _set(base, f"{table}.bogus_key", 1))
        add(table, "malformed table", _set(base, table, 7))
        add(table, "malformed table", _set(base, table, [1, 2]))
    add("study", "missing table", {k: v for k, v in base.items() if k != "study"})
    add("bogus", "unknown key", {**base, "bogus": {"x": 1}})
    text = tomli_w.dumps(base)
    add("study", "malformed table", data=(text + "\n[study]\nname = \"again\"\n").encode())
    add("study", "malformed table", data=text.replace("[study]", "[study", 1).encode())
    add("study", "malformed table", data=text.replace("[study]", "[[study]]", 1).encode())
    add("search.params.lam", "malformed table",
        data=text.replace("[search.params.lam]", "[search.params.lam.low]", 1).encode())
    add("study.name", "non-UTF-8", data=b"\xef\xbb\xbf" + text.encode("latin-1", "replace")
        .replace(b'name = "fuzz"', b'name = "f\xe9e"'))
    return out


MUTATIONS = mutations()


@pytest.fixture
def no_ray(monkeypatch):
    """study.launch replaced by a stand-in whose connect stops the command: no Ray, ever."""
    def connect(*args, **kwargs):
        raise RayWouldStart

    fake = types.ModuleType("study.launch")
    fake.connect = connect
    monkeypatch.setitem(sys.modules, "study.launch", fake)
    monkeypatch.setattr(study, "launch", fake, raising=False)
    ray_before = sys.modules.get("ray")
    running_before = ray_before is not None and ray_before.is_initialized()
    yield
    if ray_before is None:
        assert "ray" not in sys.modules, "a refused input imported Ray"
    else:  # an earlier test of the session imported (and maybe started) Ray: none started here
        assert ray_before.is_initialized() == running_before


def test_the_unmutated_study_file_is_legal(tmp_path, no_ray):
    path = tmp_path / "study.toml"
    path.write_bytes(tomli_w.dumps(_base()).replace("STORAGE", str(tmp_path / "s")).encode())
    with pytest.raises(RayWouldStart):
        main(["run", str(path)])


def test_there_are_enough_mutations_of_every_kind():
    kinds = collections.Counter(kind for _, _, kind, _ in MUTATIONS)
    assert len(MUTATIONS) >= 200
    assert {"wrong type", "nan", "inf", "-inf", "negative", "zero", "huge", "empty", "very long",
            "non-UTF-8", "unknown key", "malformed table"} <= set(kinds)


def test_every_mutated_study_file_is_refused_in_one_line_or_is_legal(tmp_path, capsys, no_ray):
    storage = tmp_path / "studies"
    outcomes: collections.Counter = collections.Counter()
    problems = []
    for ident, key, kind, data in MUTATIONS:
        path = tmp_path / "study.toml"
        path.write_bytes(data.replace(b"STORAGE", str(storage).encode()))
        try:
            code = main(["run", str(path)])
        except RayWouldStart:
            code = None
        err = capsys.readouterr().err
        legal = (key, kind) in LEGAL
        if storage.exists():
            problems.append(f"{ident}: wrote {sorted(p.name for p in storage.rglob('*'))}")
        if code is None:
            outcomes["legal: reached Ray's start"] += 1
            spec_from_raw(loads(path.read_text()))  # it parses
            if not legal:
                problems.append(f"{ident}: accepted")
            continue
        outcomes[f"refused: {kind}"] += 1
        leaf = key.rsplit(".", 1)[-1]
        if legal:
            problems.append(f"{ident}: refused a legal value: {err.strip()}")
        elif code != 2 or err.count("\n") != 1 or not err.startswith("rvsm run: error: "):
            problems.append(f"{ident}: exit {code}, stderr {err!r}")
        elif "Traceback" in err or leaf not in err:
            problems.append(f"{ident}: the message does not name {leaf!r}: {err.strip()}")
    print(f"{len(MUTATIONS)} mutated study files: " + ", ".join(
        f"{n} {outcome}" for outcome, n in sorted(outcomes.items())))
    assert not problems, "\n".join(problems)
    assert outcomes["legal: reached Ray's start"] == len(LEGAL)


COMMAND_LINES = [
    (["run"], "required: study_file"),
    (["run", "S", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "S", "--set"], "--set: expected one argument"),
    (["run", "S", "--set", "train.epochs"], "KEY=VALUE"),
    (["run", "S", "--set", "train.epochs=nan"], "epochs"),
    (["run", "S", "--set", "study.trials=1e400"], "study.trials"),
    (["run", "S", "--set", "study.name.x=1"], "'name' is not a table"),
    (["run", "S", "--set", "resources.cpus_per_trial=inf"], "resources.cpus_per_trial"),
    (["run", "S", "--set", "resources.gpus_per_trial=1e9"], "resources.gpus_per_trial"),
    (["run", "S", "--set", "study.seed=4294967296"], "study.seed"),
    (["run", "S", "--set", 'train.data_root=7'], "data_root"),
    (["run", "S", "--set", 'train.sparsify=["fc9"]'], "fc9"),
    (["extend", "S"], "required: --trials"),
    (["extend", "S", "--trials", "two"], "invalid int value: 'two'"),
    (["status"], "required: study"),
    (["status", "nowhere://x"], "nowhere://x"),
    (["resume", "s3://"], "s3://"),
]


@pytest.mark.parametrize("argv, named", COMMAND_LINES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_command_lines_are_one_line_with_a_hint(argv, named, tmp_path, capsys, no_ray):
    storage = tmp_path / "studies"
    path = tmp_path / "s.toml"
    path.write_text(study_text("s", storage))
    argv = [str(path) if a == "S" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rvsm {argv[0]}: error: ") and named in err, err
    assert not storage.exists()


def test_the_stored_copy_round_trips_every_legal_study_file():
    """The study folder's copy is written with tomli-w: it reads back to the same data, quotes,
    unicode, nested tables and extreme floats included."""
    from study.spec import dump_toml
    base = _base()
    base["train"]["data_root"] = 'C:\\data "quoted"\n\tµ'
    legal = [_set(base, key, value) for key, value in _leaves(base)]
    legal += [_set(base, "search.params.lr.high", 1e308), _set(base, "study.name", "a.b-c_1")]
    for raw in legal:
        assert loads(dump_toml(raw)) == raw
