"""`rvsm model`: one trial's sparse network out of a study, as files any PyTorch user can load.

A trial's weights live in Ray Tune's checkpoint folders (`runs/<run>/trial_<id>/checkpoint_*/
state.pt`), in the training state's own format. This module picks a trial (by id, the knee of the
front, or the best trial meeting a validation constraint: never by test accuracy), reads its final
checkpoint (locally or through the study's pyarrow filesystem) and writes into a new folder:

    model.safetensors   u, the sparse model, as a plain state_dict
    sparse.safetensors  the same, each sparsified tensor in CSR form (see `to_csr`)
    model.json          config, metrics, sizes, provenance and the recipe that rebuilds the network
    README.md           the three lines that load it back into PyTorch

Imports torch but not Ray: it runs wherever the study folder can be read.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow.fs as pafs
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from analysis import schema
from analysis.errors import AnalysisError
from analysis.load import load_results
from analysis.objectives import DEFAULT_OBJECTIVES
from analysis.summary import (at_chance, best_accuracy_at_sparsity, best_sparsity_at_accuracy,
                              chance_accuracy_of, summarise_study)
from study.provenance import code_version, library_versions_json
from study.storage import RUNS_DIR, STUDY_FILE, StudyLocation, locate
from trainables.config import ConfigError, TrainConfig
from trainables.data import DatasetNotFound, load_splits
from trainables.models import build_model
from trainables.train import accuracy, sparse_weights

PROG = "rvsm model"
FORMAT = "rvsm-model/1"
STATE_FILE = "state.pt"  # as trainables.tune_trainable writes it (not imported: that module imports Ray)
CHECKPOINT = re.compile(r"checkpoint_(\d+)")
WEIGHTS, SPARSE, MANIFEST, README = "model.safetensors", "sparse.safetensors", "model.json", "README.md"
BEST_AT = re.compile(r"\s*(\w+)\s*>=\s*([0-9.eE+-]+)\s*(%?)\s*")
BEST_AT_METRICS = ("sparsity", "val_acc")
# Input shapes of the datasets that existed before checkpoints recorded `in_shape` (older studies).
LEGACY_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "synthetic": (1, 28, 28),
                 "cifar10": (3, 32, 32)}


class ExportError(ValueError):
    """Bad input or nothing to export: one line for the user, exit status 2."""


# --- choosing the trial ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """A chosen trial: its row in the trials table and why it was chosen (for model.json)."""
    row: pd.Series
    reason: str


def parse_best_at(text: str) -> tuple[str, float]:
    """`"sparsity>=0.98"` -> ("sparsity", 0.98); `val_acc>=99%` -> ("val_acc", 0.99).

    Raises ExportError for another metric (test accuracy above all), another comparison, or a
    threshold outside [0, 1] (or [0, 100] with a % sign: `>=1.5` is refused, not read as 1.5%)."""
    match = BEST_AT.fullmatch(text)
    if match is None:
        raise ExportError(f"--best-at {text!r}: expected METRIC>=VALUE, e.g. 'sparsity>=0.98' or "
                          "'val_acc>=0.99' (quote it: the shell reads > as a redirection)")
    metric, value_text = match[1].removeprefix("metric_"), match[2]
    if metric.startswith("test_acc"):
        raise ExportError(f"--best-at {text!r}: test accuracy is reported, never used to choose trials; "
                          f"allowed: {', '.join(BEST_AT_METRICS)}")
    if metric not in BEST_AT_METRICS:
        raise ExportError(f"--best-at {text!r}: unknown metric {metric!r}; allowed: {', '.join(BEST_AT_METRICS)}")
    try:
        value = float(value_text)
    except ValueError:
        raise ExportError(f"--best-at {text!r}: {value_text!r} is not a number") from None
    scale = 100 if match[3] else 1
    if math.isnan(value) or not 0 <= value <= scale:
        raise ExportError(f"--best-at {text!r}: {value_text}{match[3]} is out of range; allowed: a "
                          "fraction in [0, 1] (0.98) or a percent in [0, 100] with its sign (98%)")
    return metric, value / scale


def choose_trial(trials: pd.DataFrame, *, trial: str | None = None, knee: bool = False,
                 best_at: str | None = None) -> Choice:
    """The trial named by exactly one of `trial` (an id or a unique prefix of one, any state),
    `knee` (of the validation accuracy-sparsity front of the finished trials) or `best_at`
    (among finished trials meeting `METRIC>=VALUE`, the one best in the other objective: highest
    val_acc at sparsity >= s, highest sparsity at val_acc >= a). Raises ExportError."""
    if trial is not None:
        return Choice(_by_id(trials, trial), f"--trial {trial}")
    if knee:
        summary = _summary(trials)
        if summary.knee_trial_id is None:
            raise ExportError(f"study {summary.study}: its front has fewer than three points or no bend, "
                              "so no knee; choose with --trial ID or --best-at")
        row = trials[trials["trial_id"] == summary.knee_trial_id].iloc[0]
        return Choice(row, "--knee: the front point farthest from the line through its normalised extremes "
                           "(validation accuracy and sparsity)")
    if best_at is None:
        raise ExportError("choose a trial with --trial ID, --knee or --best-at METRIC>=VALUE")
    metric, minimum = parse_best_at(best_at)
    _summary(trials)  # refuses a study without finished trials, naming what it has
    # as `rvsm report`'s best trade-offs: a collapsed network (at chance level) is no candidate
    collapsed = at_chance(trials["metric_val_acc"], chance_accuracy_of(trials))
    trials = trials[~collapsed]
    if metric == "sparsity":
        row, reason = best_accuracy_at_sparsity(trials, minimum), "the highest val_acc at sparsity"
    else:
        row, reason = best_sparsity_at_accuracy(trials, minimum), "the highest sparsity at val_acc"
    if row is None:
        column = trials.loc[trials["state"] == schema.FINISHED, f"metric_{metric}"]
        highest = f"the highest is {column.max():.6g}" if len(column) else "none is above chance level"
        raise ExportError(f"--best-at {best_at!r}: no finished trial above chance level has "
                          f"{metric} >= {minimum:g} ({highest})")
    return Choice(row, f"--best-at {best_at}: {reason} >= {minimum:g}")


def _summary(trials: pd.DataFrame):
    try:
        return summarise_study(trials, DEFAULT_OBJECTIVES)
    except AnalysisError as error:
        raise ExportError(str(error)) from None


def _by_id(trials: pd.DataFrame, wanted: str) -> pd.Series:
    ids = trials["trial_id"].astype(str)
    exact = trials[ids == wanted]
    matches = exact if len(exact) else trials[ids.str.startswith(wanted)]
    if len(matches) == 1:
        return matches.iloc[0]
    if len(matches) > 1:
        raise ExportError(f"--trial {wanted!r} matches {len(matches)} trials "
                          f"({', '.join(sorted(matches['trial_id'])[:5])}, ...): give more of the id")
    known = sorted(ids)
    shown = ", ".join(known[:10]) + (f", ... ({len(known)} in all)" if len(known) > 10 else "")
    raise ExportError(f"--trial {wanted!r}: no such trial in this study; its trials: {shown or 'none'}")


# --- finding the final checkpoint -------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    path: str   # the checkpoint folder, in the study filesystem's path syntax
    state: dict


def final_checkpoint(location: StudyLocation, row: pd.Series) -> Checkpoint:
    """The trial's last checkpoint, which must hold its final epoch (with test accuracy).

    Raises ExportError saying what is there instead: no trial folder, no checkpoint, or the last
    checkpoint of a trial that was stopped, errored, diverged or is still running."""
    trial_id = str(row["trial_id"])
    folders = _checkpoint_folders(location, trial_id)
    pattern = location.join(RUNS_DIR, "*", f"trial_{trial_id}", "checkpoint_*")
    what = _trial_state_text(row)
    if not folders:
        raise ExportError(f"trial {trial_id} {what}, but no checkpoints found under {pattern} "
                          "(deleted, or never written): nothing to export")
    last = folders[-1]
    state = _read_state(location, last)
    metrics = state.get("metrics") or {}
    epoch = metrics.get("epoch", state.get("epoch"))
    if metrics.get("diverged"):
        raise ExportError(f"trial {trial_id} diverged at epoch {epoch}: its weights are not finite; "
                          f"nothing to export (last checkpoint: {last})")
    if metrics.get("test_acc") is None:
        raise ExportError(f"trial {trial_id} {what}: it has no final checkpoint; its last checkpoint, "
                          f"{last}, holds epoch {epoch} without test accuracy")
    return Checkpoint(last, state)


def _trial_state_text(row: pd.Series) -> str:
    """`was stopped at epoch 2 of 5`, `finished`, ... for error messages."""
    state, done = str(row.get("state")), row.get("epochs_completed")
    planned = _config(row).get("epochs")
    at = f" at epoch {int(done)}" + (f" of {planned}" if planned else "") if pd.notna(done) else ""
    if state == schema.STOPPED:
        return f"was stopped early{at}"
    if state == schema.ERRORED:
        error = row.get("error")
        return f"errored{at}" + (f" ({' '.join(str(error).split())[:200]})" if isinstance(error, str) else "")
    if state == schema.RUNNING:
        return f"is still running{at}"
    return f"{state}{at}" if state != schema.FINISHED else "finished"


def _checkpoint_folders(location: StudyLocation, trial_id: str) -> list[str]:
    """Checkpoint folders of `trial_<id>` in every run of the study, oldest first."""
    runs = location.fs.get_file_info(pafs.FileSelector(location.join(RUNS_DIR), allow_not_found=True))
    found: list[tuple[int, str]] = []
    for run in sorted(r.path for r in runs if r.type == pafs.FileType.Directory):
        trial_dir = f"{run}/trial_{trial_id}"
        entries = location.fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        for entry in entries:
            match = CHECKPOINT.fullmatch(entry.base_name)
            if match and entry.type == pafs.FileType.Directory:
                found.append((int(match[1]), entry.path))
    return [path for _, path in sorted(found)]


def _read_state(location: StudyLocation, folder: str) -> dict:
    path = f"{folder}/{STATE_FILE}"
    try:
        with location.fs.open_input_stream(path) as f:
            data = f.read()
    except (FileNotFoundError, OSError) as error:
        raise ExportError(f"cannot read {path}: {error}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ExportError(f"{path} is not a readable training state: {str(error).splitlines()[0]}") from None
    if not isinstance(state, dict) or not {"state", "metrics"} <= set(state):
        raise ExportError(f"{path} is not an rvsm training checkpoint (no 'state' and 'metrics')")
    return {**state["state"], "metrics": state["metrics"]}


# --- the sparse form: pure tensor maths ---------------------------------------------------------

def to_csr(tensor: Tensor) -> dict[str, Tensor]:
    """CSR of `tensor` viewed as a matrix (first dimension by the rest, as a conv or linear weight
    is stored; a vector as one row): `crow_indices` (rows + 1: where each row's entries start),
    `col_indices` and `values` (one per non-zero, row by row). Indices are int32 when they fit
    (the usual choice for storage), else int64."""
    matrix = _as_matrix(tensor.detach())
    rows, cols = matrix.nonzero(as_tuple=True)  # row-major order
    index_dtype = torch.int32 if max(matrix.numel(), 1) < 2**31 else torch.int64
    crow = torch.zeros(matrix.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=matrix.shape[0]).cumsum(0)
    return {"crow_indices": crow.to(index_dtype), "col_indices": cols.to(index_dtype),
            "values": matrix[rows, cols].contiguous()}


def from_csr(parts: dict[str, Tensor], shape: Sequence[int]) -> Tensor:
    """The dense tensor of shape `shape` back from `to_csr`'s parts."""
    crow, values = parts["crow_indices"].long(), parts["values"]
    matrix = _as_matrix(torch.zeros(tuple(shape), dtype=values.dtype))
    rows = torch.repeat_interleave(torch.arange(len(crow) - 1), crow.diff())
    matrix[rows, parts["col_indices"].long()] = values
    return matrix.reshape(tuple(shape))


def _as_matrix(tensor: Tensor) -> Tensor:
    return tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.reshape(1, -1)


def nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def sparse_state_dict(weights: dict[str, Tensor], sparsified: Sequence[str]) -> tuple[dict[str, Tensor], dict]:
    """The tensors of `sparse.safetensors` (`name.crow_indices` ... for a sparsified tensor, the
    tensor itself for the others) and its metadata: the shape of each CSR tensor (JSON)."""
    tensors, shapes = {}, {}
    for name, tensor in weights.items():
        if name in sparsified:
            tensors |= {f"{name}.{part}": t for part, t in to_csr(tensor).items()}
            shapes[name] = list(tensor.shape)
        else:
            tensors[name] = tensor
    return tensors, {"format": FORMAT, "csr_shapes": json.dumps(shapes)}


def load_sparse(path: str | Path) -> dict[str, Tensor]:
    """A dense state_dict from `sparse.safetensors` (equal to `model.safetensors`)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        shapes = json.loads((f.metadata() or {}).get("csr_shapes", "{}"))
    tensors = load_file(str(path))
    weights = {name: from_csr({part: tensors.pop(f"{name}.{part}") for part in
                               ("crow_indices", "col_indices", "values")}, shape)
               for name, shape in shapes.items()}
    return weights | tensors


def tensor_sizes(weights: dict[str, Tensor], sparse: dict[str, Tensor], sparsified: Sequence[str]) -> dict:
    """Per sparsified tensor: shape, non-zeros, dense and CSR bytes; and the totals of both files'
    tensors (dense_bytes: every tensor dense; sparse_bytes: sparsified ones in CSR)."""
    per_tensor = {}
    for name in sparsified:
        csr_bytes = sum(nbytes(sparse[f"{name}.{part}"]) for part in ("crow_indices", "col_indices", "values"))
        per_tensor[name] = {"shape": list(weights[name].shape), "nonzeros": int(weights[name].count_nonzero()),
                            "dense_bytes": nbytes(weights[name]), "csr_bytes": csr_bytes}
    dense = sum(nbytes(t) for t in weights.values())
    sparse_total = sum(nbytes(t) for t in sparse.values())
    return {"tensors": per_tensor, "dense_bytes": dense, "sparse_bytes": sparse_total,
            "sparsified_dense_bytes": sum(t["dense_bytes"] for t in per_tensor.values()),
            "sparsified_csr_bytes": sum(t["csr_bytes"] for t in per_tensor.values())}


# --- rebuilding the network ---------------------------------------------------------------------

def network_recipe(config: dict, state: dict) -> dict:
    """How to rebuild the network: `trainables.models.build_model(model, **arguments)`."""
    if "in_shape" in state:
        in_shape, num_classes = [int(n) for n in state["in_shape"]], int(state["num_classes"])
    elif config.get("dataset") in LEGACY_SHAPES:  # a checkpoint from before in_shape was recorded
        in_shape, num_classes = list(LEGACY_SHAPES[config["dataset"]]), 10
    else:
        raise ExportError(f"the checkpoint does not record the network's input shape and dataset "
                          f"{config.get('dataset')!r} has none known; retrain with this version")
    arguments: dict[str, Any] = {"in_shape": in_shape, "num_classes": num_classes}
    if config.get("dropout"):
        arguments["dropout"] = config["dropout"]
    return {"builder": "trainables.models.build_model", "model": config["model"], "arguments": arguments}


def build_network(recipe: dict) -> nn.Module:
    """A fresh network from a recipe (model.json's `network`), in eval mode."""
    arguments = dict(recipe["arguments"])
    arguments["in_shape"] = tuple(arguments["in_shape"])
    return build_model(recipe["model"], **arguments).eval()


def load_exported(folder: str | Path) -> tuple[nn.Module, dict]:
    """The exported network with its weights (CPU, eval mode) and its model.json."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    model = build_network(manifest["network"])
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model, manifest


def readme_lines(recipe: dict) -> list[str]:
    """The three Python lines that load the exported weights into a fresh network."""
    args = recipe["arguments"]
    call = ", ".join([repr(recipe["model"]), f"in_shape={tuple(args['in_shape'])!r}",
                      f"num_classes={args['num_classes']!r}",
                      *(f"{k}={v!r}" for k, v in args.items() if k not in ("in_shape", "num_classes"))])
    return ["import safetensors.torch, trainables.models",
            f"model = trainables.models.build_model({call}).eval()",
            f"model.load_state_dict(safetensors.torch.load_file({WEIGHTS!r}))"]


# --- writing the artifact ------------------------------------------------------------------------

@dataclass(frozen=True)
class Exported:
    folder: Path
    manifest: dict


def export_trial(location: StudyLocation, choice: Choice, out_dir: str | Path) -> Exported:
    """Write the four files of `choice`'s final checkpoint into `out_dir` (a new or empty folder;
    written whole into a temporary folder first, so a failure leaves nothing behind)."""
    out_dir = Path(out_dir).expanduser()
    _check_out_dir(out_dir)
    row = choice.row
    checkpoint = final_checkpoint(location, row)
    state, config = checkpoint.state, _config(row)
    weights = sparse_weights(state)
    sparsified = [name for name in state["sparsified"] if name in weights]
    recipe = network_recipe(config, state)
    try:
        network = build_network(recipe)  # a user's factory must be importable here too
    except ConfigError as error:
        raise ExportError(f"cannot rebuild the network: {error}") from None
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise ExportError(f"the weights do not fit the rebuilt network {recipe['model']!r}: "
                          f"{' '.join(str(error).split())[:300]}") from None
    parameters = {name for name, _ in network.named_parameters()}
    nonzeros = sum(int(t.count_nonzero()) for name, t in weights.items() if name in parameters)
    metrics = _final_metrics(state["metrics"])
    if metrics.get("nonzeros") is not None and nonzeros != metrics["nonzeros"]:
        raise ExportError(f"{checkpoint.path}: its weights have {nonzeros} non-zeros, its metrics say "
                          f"{metrics['nonzeros']}: the checkpoint is inconsistent")
    sparse, sparse_meta = sparse_state_dict(weights, sparsified)
    manifest = {"format": FORMAT, **_identity(location, choice, checkpoint), "network": recipe,
                "sparsified": sparsified, "threshold": state.get("threshold"), "metrics": metrics,
                "sizes": tensor_sizes(weights, sparse, sparsified), "config": config,
                "provenance": _provenance(row)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        save_file(sparse, str(tmp / SPARSE), metadata=sparse_meta)
        manifest["sizes"]["files"] = {WEIGHTS: (tmp / WEIGHTS).stat().st_size,
                                      SPARSE: (tmp / SPARSE).stat().st_size}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (tmp / README).write_text(readme_text(manifest), encoding="utf-8")
        _usual_permissions(tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty: checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out_dir, manifest)


def _identity(location: StudyLocation, choice: Choice, checkpoint: Checkpoint) -> dict:
    row = choice.row
    return {"study": str(row.get("study")), "study_location": location.uri,
            "trial_id": str(row["trial_id"]), "trial_number": int(row["trial_number"]),
            "selected_by": choice.reason, "checkpoint": checkpoint.path}


def _provenance(row: pd.Series) -> dict:
    """Where and with what the trial was trained (from its results row), and the export itself."""
    return {
        "trained": {"code_version": _text(row.get("code_version")), "device": _text(row.get("device")),
                    "node": _text(row.get("node")), "started_at": _iso(row.get("started_at")),
                    "ended_at": _iso(row.get("ended_at")),
                    "library_versions": _json_or_none(row.get("library_versions_json"))},
        "exported": {"code_version": code_version(), "at": datetime.now(timezone.utc).isoformat(),
                     "library_versions": json.loads(library_versions_json())
                     | {"safetensors": metadata.version("safetensors")}},
    }


def _usual_permissions(folder: Path) -> None:
    """mkdtemp makes a private folder (and safetensors private files): give them the modes a
    plain mkdir and open would have (the umask's)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"-o {out_dir}: exists and is not an empty folder; choose another or remove it")
    if not out_dir.parent.is_dir():
        raise ExportError(f"-o {out_dir}: its parent folder {out_dir.parent} does not exist")


def _config(row: pd.Series) -> dict:
    return _json_or_none(row.get("config_json")) or {}


def _text(value: Any) -> str | None:
    """A string cell, or None for a null (None or NaN, as pandas may read it)."""
    return value if isinstance(value, str) else None


def _json_or_none(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) and text else None


def _iso(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def _final_metrics(metrics: dict) -> dict:
    """The final epoch's metrics, JSON-safe (NaN as null), per-layer sparsity as an object."""
    out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
           for k, v in metrics.items() if k != "layer_sparsity_json"}
    out["layer_sparsity"] = json.loads(metrics.get("layer_sparsity_json") or "{}")
    return out


def readme_text(manifest: dict) -> str:
    m, sizes = manifest["metrics"], manifest["sizes"]
    lines = readme_lines(manifest["network"])
    return "\n".join([
        f"# {manifest['network']['model']}: trial {manifest['trial_id']} of study {manifest['study']}",
        "",
        f"RVSM-sparsified network: validation accuracy {_pct(m.get('val_acc'))}, test accuracy "
        f"{_pct(m.get('test_acc'))}, sparsity {_pct(m.get('sparsity'))} of the sparsified tensors "
        f"({m.get('nonzeros')} non-zeros of {m.get('params')} parameters, compression "
        f"{m.get('compression', 0):.1f}x). Chosen by {manifest['selected_by']}.",
        "",
        "Load it into PyTorch (with `rvsm-study` installed, for the network's class):",
        "",
        "```python",
        *lines,
        "```",
        "",
        f"- `{WEIGHTS}`: the weights (u, zeros included) as a plain state_dict.",
        f"- `{SPARSE}`: the same, each sparsified tensor in CSR form (`<name>.crow_indices`, "
        f"`.col_indices`, `.values`, the tensor viewed as first dimension by the rest; shapes in the "
        f"file's `csr_shapes` metadata): {sizes['sparse_bytes']:,} bytes of tensors against "
        f"{sizes['dense_bytes']:,} dense. `study.model_export.load_sparse(path)` turns it back into "
        "a dense state_dict.",
        f"- `{MANIFEST}`: training config, metrics (per-layer sparsity included), sizes, provenance, "
        "and the network's recipe (`network`).",
        "",
    ])


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


# --- checking: the export reproduces the trial's test accuracy --------------------------------

def measure_test_accuracy(folder: str | Path) -> float:
    """Test accuracy of the exported network, evaluated on CPU as training evaluates (same data
    split, batch size and memory format). Raises the data loader's errors when the data is absent."""
    model, manifest = load_exported(folder)
    config = TrainConfig.from_dict(manifest["config"])
    splits = load_splits(config, torch.device("cpu"))
    model = model.to(memory_format=torch.channels_last)  # as train() does on CPU
    return accuracy(model, splits.test, {}, batch_size=config.eval_batch_size)


# --- command line ----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage and exit
        raise ExportError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Export one trial's sparse network: model.safetensors, "
                     "sparse.safetensors (CSR), model.json and README.md.")
    parser.add_argument("study", help="study folder, URI, or the study's TOML file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", metavar="ID", help="a trial id (or a unique prefix of one)")
    which.add_argument("--knee", action="store_true", help="the knee of the val_acc-sparsity front")
    which.add_argument("--best-at", metavar="METRIC>=VALUE",
                       help="'sparsity>=0.98': the highest val_acc among finished trials at that "
                            "sparsity; 'val_acc>=0.99': the highest sparsity at that accuracy (quote it)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="a new or empty folder")
    parser.add_argument("--check", action="store_true",
                        help="then evaluate the exported network on the test split (CPU; needs the "
                             "dataset) and compare with the trial's reported test accuracy")
    return parser


def main(argv: Sequence[str]) -> int:
    """`rvsm model`: 0 when written (and, with --check, reproduced), 1 when the check differs,
    2 on bad input or when the trial has nothing to export."""
    try:
        if any(a in ("-h", "--help") for a in argv):
            _parser().print_help()
            return 0
        args = _parser().parse_args(list(argv))
        location = _locate(args.study)
        trials = load_results([location.uri]).trials
        if trials.empty:
            raise ExportError(f"{args.study}: no trials recorded yet")
        choice = choose_trial(trials, trial=args.trial, knee=args.knee, best_at=args.best_at)
        exported = export_trial(location, choice, args.output)
    except (ExportError, AnalysisError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(summary_text(exported))
    if not args.check:
        return 0
    return _check(exported)


def _check(exported: Exported) -> int:
    try:
        measured = measure_test_accuracy(exported.folder)
    except (DatasetNotFound, ConfigError) as error:
        print(f"{PROG}: error: --check cannot evaluate the export: {error}", file=sys.stderr)
        return 2
    reported = exported.manifest["metrics"]["test_acc"]
    same = measured == reported
    print(f"check: test accuracy of the export {measured:.6f}, reported {reported:.6f}: "
          + ("identical" if same else "DIFFERENT (reported on another device, or a changed dataset?)"))
    return 0 if same else 1


def summary_text(exported: Exported) -> str:
    m, sizes = exported.manifest["metrics"], exported.manifest["sizes"]
    lines = [f"trial {exported.manifest['trial_id']} ({exported.manifest['selected_by']}): val acc "
             f"{_pct(m.get('val_acc'))}, test acc {_pct(m.get('test_acc'))}, sparsity {_pct(m.get('sparsity'))}, "
             f"{m.get('nonzeros')} non-zeros; from {exported.manifest['checkpoint']}"]
    for name, t in sizes["tensors"].items():
        zeros = 1 - t["nonzeros"] / math.prod(t["shape"])
        lines.append(f"  {name:<24} {'x'.join(map(str, t['shape'])):>14}  {100 * zeros:6.2f}% zeros  "
                     f"dense {t['dense_bytes']:>11,} B  CSR {t['csr_bytes']:>11,} B")
    ratio = sizes["dense_bytes"] / sizes["sparse_bytes"] if sizes["sparse_bytes"] else math.inf
    relation = f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.1f}x larger: too few zeros for CSR"
    lines.append(f"  all tensors: dense {sizes['dense_bytes']:,} B, sparse form {sizes['sparse_bytes']:,} B "
                 f"({relation})")
    lines.append(f"wrote {exported.folder}/ ({', '.join((WEIGHTS, SPARSE, MANIFEST, README))})")
    return "\n".join(lines)


def _locate(study: str) -> StudyLocation:
    """A study folder or URI, or the study file that names one."""
    if study.endswith(".toml") and "://" not in study:
        from study.spec import SpecError, load_spec
        try:
            spec = load_spec(study)
        except SpecError as error:
            raise ExportError(str(error)) from None
        location = locate(spec.study.storage, spec.study.name)
    else:
        location = locate(study)
    if not location.exists(STUDY_FILE):
        raise ExportError(f"no study at {location.uri!r} (no {STUDY_FILE} there)")
    return location

