"""The trainable: `train(config, report)` trains one configuration and reports every epoch.

A plain function of its config; it knows nothing of Ray. `report(metrics, state)` receives a flat
dict of Python scalars and a `torch.save`-able state from which `train(config, report,
state=state)` resumes after that epoch, ending exactly as an uninterrupted run would (on CPU).
It does not set the number of torch threads: the caller (CLI, Ray adapter) owns that.
"""
from __future__ import annotations

import json
import math
import random
import time
from functools import partial
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .config import ConfigError, TrainConfig
from .data import Splits, load_splits
from .models import build_model
from .rvsm import (Rvsm, finetune_step, hard_threshold, measure_sparsity, select_step,
                   sparse_tensors, sparsified_names, threshold)
from .thresholds import base_thresholds, ramp_factor, ramped, scale, unmatched_multipliers

Report = Callable[[dict, dict], None]
NAN_CHECK_EVERY = 50  # steps between divergence checks: each is a device sync on CUDA


def train(config: TrainConfig, report: Report, *, state: dict | None = None) -> dict:
    """Train `config`, calling `report(metrics, state)` after every epoch; return the last metrics."""
    device = resolve_device(config.device)
    torch.set_flush_denormal(True)  # x86 CPUs: denormals (tiny late gradients) run ~100x slower
    splits = load_splits(config, device)
    torch.manual_seed(config.seed)
    model = build_model(config.model, in_shape=splits.in_shape, num_classes=splits.num_classes,
                        dropout=config.dropout, init=config.init).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # oneDNN's fast convolutions on CPU
    names = sparsified_names(model, config.sparsify)
    sparse = {name: p for name, p in model.named_parameters() if name in names}
    t = config.threshold or threshold(config.lam, config.beta)
    full = tensor_thresholds(config, sparse, t)  # t_l = t s_l m_l, from w at initialisation
    optimizer = make_optimizer(config, model.parameters())
    steps_per_epoch = math.ceil(len(splits.train[1]) / config.batch_size)
    rvsm_steps = min(config.epochs * steps_per_epoch, config.max_steps or math.inf)
    total_steps = rvsm_steps + config.finetune_epochs * steps_per_epoch
    ramp_steps = config.ramp_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_factor, schedule=config.schedule, total_steps=rvsm_steps,
        finetune_steps=total_steps - rvsm_steps, finetune_lr_factor=config.finetune_lr_factor))
    order = torch.Generator().manual_seed(config.seed)  # data order only
    epoch, step, metrics, masks = 0, 0, {}, None
    if state is not None:
        epoch, step, metrics = restore(state, model, optimizer, scheduler, order)
        masks = state.get("masks") and {name: m.to(device) for name, m in state["masks"].items()}
    rvsm_at = lambda k: Rvsm(ramped(full, ramp_factor(k, ramp_steps, config.ramp)),  # noqa: E731
                             config.beta, config.coupling)
    rv = rvsm_at(step)
    step_fn = select_step(config.rule, config.lam, config.notebook_dense_pass)
    train_x, train_y = splits.train

    while epoch < config.epochs + config.finetune_epochs and step < total_steps:
        epoch += 1
        if epoch > config.epochs:  # fine-tuning: u's support frozen, w = u, only non-zeros train
            masks = masks or freeze_support(sparse, full)
            rv, step_fn = Rvsm(dict.fromkeys(sparse, 0.0), config.beta, masks=masks), finetune_step
        model.train()
        start, loss_sum, seen = time.perf_counter(), torch.zeros((), device=device), 0
        for idx in torch.randperm(len(train_y), generator=order).to(device).split(config.batch_size):
            if step < ramp_steps:  # the thresholds grow: Python floats, no device sync
                rv = rvsm_at(step)
            loss = step_fn(model, sparse, train_x[idx], train_y[idx], optimizer, rv)
            scheduler.step()
            loss_sum.add_(loss, alpha=len(idx))
            step, seen = step + 1, seen + len(idx)
            if step >= total_steps or (step % NAN_CHECK_EVERY == 0 and not loss_sum.isfinite()):
                break
        if masks is None:
            rv = rvsm_at(step)  # the thresholds after the epoch's last step define its u
        train_loss = loss_sum.item() / seen  # a sync point: the epoch's work is done
        elapsed = time.perf_counter() - start
        diverged = not math.isfinite(train_loss)
        last = diverged or epoch == config.epochs + config.finetune_epochs or step >= total_steps
        shown = full if masks is not None else rv.t  # fine-tuning: the thresholds that cut the support
        metrics = {"epoch": epoch, "step": step, "train_loss": train_loss,
                   **evaluate(model, splits, names, rv.t, config.eval_batch_size, diverged=diverged,
                              diagnostics=last or epoch % config.diagnostics_every == 0,
                              test=last and not diverged),
                   "threshold": t * (1.0 if masks is not None else ramp_factor(step, ramp_steps, config.ramp)),
                   "layer_threshold_json": json.dumps(shown),
                   "epoch_time_s": elapsed, "samples_per_s": seen / elapsed, "diverged": diverged}
        metrics = order_metrics(metrics)
        report(metrics, snapshot(model, sparse, rv, optimizer, scheduler, order, epoch, step, metrics,
                                 splits=splits))
        if last:
            break
    return metrics


def tensor_thresholds(config: TrainConfig, sparse: dict[str, nn.Parameter], t: float) -> dict[str, float]:
    """t_l = t s_l m_l of each sparsified tensor (`trainables.thresholds`), its scale taken from
    w as initialised (the std costs one sync per tensor, once). Raises `ConfigError` for a
    multiplier that names no sparsified tensor."""
    unknown = unmatched_multipliers(sparse, config.multipliers)
    if unknown:
        raise ConfigError(f"threshold_multipliers: {unknown!r} names no sparsified tensor; sparsified: "
                          f"{', '.join(sparse)}")
    scales = {name: scale(config.threshold_scale, fan_in=w[0].numel(),
                          std=w.detach().std().item() if config.threshold_scale == "std" else 0.0)
              for name, w in sparse.items()}
    return base_thresholds(t, scales, config.multipliers)


@torch.no_grad()
def freeze_support(sparse: dict[str, nn.Parameter], thresholds: dict[str, float]) -> dict[str, Tensor]:
    """Set w = u = H(w) and return the support of u (name -> mask in w's dtype) that fine-tuning keeps."""
    masks = {}
    for name, w in sparse.items():
        masks[name] = (hard_threshold(w, thresholds[name]) != 0).to(w.dtype)
        w.mul_(masks[name])
    return masks


METRIC_ORDER = ("epoch", "step", "train_loss", "val_acc", "val_acc_dense", "val_acc_complement",
                "sparsity", "sparsity_all", "nonzeros", "params", "compression", "threshold",
                "epoch_time_s", "samples_per_s", "diverged", "layer_sparsity_json",
                "layer_threshold_json", "test_acc", "test_acc_dense")


def order_metrics(metrics: dict) -> dict:
    return {key: metrics[key] for key in METRIC_ORDER if key in metrics}


def evaluate(model: nn.Module, splits: Splits, names: Iterable[str], t: float | dict[str, float],
             batch_size: int,
             *, diverged: bool = False, diagnostics: bool = True, test: bool = False) -> dict[str, Any]:
    """Accuracy of u and the sparsity of u (one `measure_sparsity`); with `diagnostics`, also the
    accuracies of w and of the complement w - u, else None for them (not measured: each is a
    validation pass as long as u's, and only diagnoses the run)."""
    w = {name: p.detach() for name, p in model.named_parameters()}
    u = sparse_tensors(w, names, t)
    sparsity = measure_sparsity({**w, **u}, u)
    acc = (lambda split, overrides: math.nan) if diverged else partial(accuracy, model, batch_size=batch_size)
    dense = complement_acc = None
    if diagnostics:
        zeroed = {name: w[name] - u[name] for name in u}  # w - u: only what u dropped
        dense, complement_acc = acc(splits.val, {}), acc(splits.val, zeroed)
    metrics = {"val_acc": acc(splits.val, u), "val_acc_dense": dense, "val_acc_complement": complement_acc,
               "sparsity": sparsity.sparsity, "sparsity_all": sparsity.sparsity_all,
               "nonzeros": sparsity.nonzeros, "params": sparsity.params,
               "compression": sparsity.compression, "layer_sparsity_json": json.dumps(sparsity.layers)}
    if test:
        metrics |= {"test_acc": acc(splits.test, u), "test_acc_dense": acc(splits.test, {})}
    return metrics


@torch.no_grad()
def accuracy(model: nn.Module, split: tuple[Tensor, Tensor], overrides: dict[str, Tensor],
             *, batch_size: int) -> float:
    """Fraction classified right, in eval mode, with `overrides` standing in for the named
    parameters (no copy of the model)."""
    model.eval()
    x, y = split
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for start in range(0, len(y), batch_size):
        logits = functional_call(model, overrides, (x[start:start + batch_size],))
        correct += (logits.argmax(dim=1) == y[start:start + batch_size]).sum()
    return correct.item() / len(y)


def make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Fused kernels (CPU and CUDA): the same update as the per-tensor loop, a few % faster."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           fused=True)


def lr_factor(step: int, *, schedule: str, total_steps: int, finetune_steps: int = 0,
              finetune_lr_factor: float = 1.0) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps: `total_steps` RVSM steps
    under `schedule`, then `finetune_steps` fine-tuning steps at `finetune_lr_factor` under the
    same schedule started afresh."""
    if finetune_steps and step >= total_steps:
        return finetune_lr_factor * lr_factor(step - total_steps, schedule=schedule, total_steps=finetune_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return 1.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device={name!r} is not available here ({torch.cuda.device_count()} CUDA "
                          "devices); allowed: 'auto', 'cpu'" + (", 'cuda'" if torch.cuda.is_available() else ""))
    return device


# --- state: everything a resumed run needs to continue exactly --------------------------------

def snapshot(model, sparse, rv: Rvsm, optimizer, scheduler, order: torch.Generator, epoch: int,
             step: int, metrics: dict, *, splits: Splits) -> dict:
    """A CPU copy (safe to keep while training goes on) that `torch.load(weights_only=True)` reads.
    `in_shape` and `num_classes` are the network's constructor arguments (`rvsm model` rebuilds it).
    `thresholds` (name -> t_l) define u; while fine-tuning they are 0 (w = u) and `masks` holds u's
    frozen support. `threshold` is the run's t (before per-tensor scales), for older readers."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return _cpu_copy({
        "epoch": epoch, "step": step, "metrics": metrics, "threshold": metrics["threshold"],
        "thresholds": {name: rv.threshold(name) for name in sparse}, "masks": rv.masks,
        "sparsified": tuple(sparse),
        "in_shape": list(splits.in_shape), "num_classes": splits.num_classes,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "order": order.get_state(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [name, keys.tolist(), pos, has_gauss, gauss], "python": random.getstate()},
    })


def restore(state: dict, model, optimizer, scheduler, order: torch.Generator) -> tuple[int, int, dict]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    order.set_state(state["order"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(_tuples(rng["python"]))
    return state["epoch"], state["step"], state["metrics"]


def sparse_weights(state: dict) -> dict[str, Tensor]:
    """u as a state_dict: the state's w with its sparsified tensors thresholded."""
    t = state.get("thresholds") or dict.fromkeys(state["sparsified"], state["threshold"])
    return {name: (hard_threshold(w, t[name]) if name in state["sparsified"] else w).contiguous()
            for name, w in state["model"].items()}


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(value) for value in obj)
    return obj


def _tuples(obj: Any) -> Any:
    """random.setstate wants the tuples back that serialisation may have turned into lists."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj
