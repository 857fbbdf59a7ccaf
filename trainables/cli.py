"""`rvsm train`: train one configuration from flags and/or a TOML file, print one line per epoch.

Precedence: `--preset` < `--config FILE` < flags. Every `TrainConfig` field is a flag
(`--lam 1e-4 --sparsify fc1`, `--data_root` or `--data-root`; lists comma-separated:
`--sparsify conv1,fc1`). Writes
`OUT/metrics.json` (config and every epoch's metrics) and `OUT/weights.pt` (the sparse model u).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from .config import FIELDS, ConfigError, TrainConfig
from .data import DatasetNotFound
from .preflight import check_config
from .presets import PRESETS
from .train import sparse_weights, train

PROG = "rvsm train"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit
        raise UsageError(f"{message} (see {PROG} --help)")


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        config = TrainConfig.from_dict(_settings(args))
        check_config(config)  # a sparsify name the network lacks fails here, before the data loads
        out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {out}: {e.strerror or e}") from None
        run(config, out)
    except (UsageError, ConfigError, DatasetNotFound) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


def run(config: TrainConfig, out: Path) -> list[dict]:
    """Train, printing each epoch; write metrics.json and weights.pt into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    last_state: dict = {}

    def report(metrics: dict, state: dict) -> None:
        history.append(metrics)
        last_state.update(state)
        print(format_epoch(metrics), flush=True)

    print(f"training {config.model} on {config.dataset}, rule {config.rule}, lam {config.lam:g}, "
          f"beta {config.beta:g}, sparsify {config.sparsify}; writing to {out}", flush=True)
    metrics = train(config, report)
    print(format_final(metrics), flush=True)
    (out / "metrics.json").write_text(json.dumps(
        {"config": config.to_dict(), "epochs": [_json_safe(m) for m in history]}, indent=1, allow_nan=False))
    torch.save(sparse_weights(last_state), out / "weights.pt")
    return history


def format_epoch(m: dict) -> str:
    return (f"epoch {m['epoch']:3d}  step {m['step']:6d}  loss {m['train_loss']:.4f}  "
            f"val acc u {m['val_acc']:.4f} w {_optional(m['val_acc_dense'])} "
            f"complement {_optional(m['val_acc_complement'])}  sparsity {m['sparsity']:.4f}  "
            f"compression {m['compression']:.2f}x  threshold {m['threshold']:.4g}  "
            f"{m['samples_per_s']:.0f} samples/s")


def _optional(value: float | None) -> str:
    """A diagnostic accuracy, measured only every `diagnostics_every` epochs."""
    return "  -   " if value is None else f"{value:.4f}"


def format_final(m: dict) -> str:
    if m["diverged"]:
        return f"diverged at step {m['step']} (non-finite loss)"
    return f"test acc u {m['test_acc']:.4f} w {m['test_acc_dense']:.4f}"


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Preset, then the config file, then the flags given."""
    settings: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    if args.config:
        settings |= _read_toml(Path(args.config))
    for name, field in FIELDS.items():
        text = getattr(args, name)
        if text is not None:
            settings[name] = _parse_value(name, field.type, text)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))  # a BOM is no error
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--config {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                         f"{e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path}: not valid TOML: {e}") from None
    fields = data.get("train", data)
    if not isinstance(fields, dict):
        raise UsageError(f"--config {path}: 'train' must be a table ([train]), got {fields!r}")
    return fields


def _parse_value(name: str, type_name: str, text: str) -> Any:
    """A flag's text as the field's type; the config then checks the range."""
    if name == "sparsify":
        return text if text in ("all", "fc1") else [part.strip() for part in text.split(",")]
    if name == "threshold_multipliers":  # conv1=0.5,fc2=2
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        if not all(sep for _, sep, _ in pairs):
            raise UsageError(f"{name}={text!r} is not a list of name=number; e.g. conv1=0.5,fc2=2")
        try:
            return {key.strip(): float(value) for key, _, value in pairs}
        except ValueError:
            raise UsageError(f"{name}={text!r} is not a list of name=number; e.g. conv1=0.5,fc2=2") from None
    if type_name == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"{name}={text!r} is not a bool; allowed: true, false")
        return text.lower() in ("true", "1", "yes")
    try:
        return {"int": int, "float": float}.get(type_name, str)(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a valid {type_name}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Train one RVSM configuration.", allow_abbrev=False)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    parser.add_argument("--config", metavar="FILE", help="TOML file of fields (flat or under [train])")
    parser.add_argument("--out", metavar="DIR", help="output folder (default runs/<timestamp>)")
    for name, field in FIELDS.items():
        choices = field.metadata["choices"]
        allowed = f"; one of {', '.join(map(str, choices))}" if choices else ""
        spellings = {f"--{name}", f"--{name.replace('_', '-')}"}  # --data_root or --data-root
        parser.add_argument(*sorted(spellings, reverse=True), dest=name, metavar=field.type.upper().split(" ")[0],
                            help=f"{field.metadata['help']} (default {field.default!r}{allowed})")
    return parser


def _json_safe(metrics: dict) -> dict:
    """Strict JSON: NaN and infinities (a diverged epoch) become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
