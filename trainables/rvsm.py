"""Relaxed variable splitting (RVSM): the maths, as small functions on tensors.

RVSM trains w while a sparse copy u = H(w) is kept, where H zeroes every entry with |w| <= t and
t = sqrt(2 lambda / beta) is the minimiser of lambda ||u||_0 + beta/2 ||u - w||^2. The sparse
model u is the one that is evaluated and kept. Each update rule below is one optimizer step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from .config import ConfigError

Params = Mapping[str, Tensor]


def threshold(lam: float, beta: float) -> float:
    """t = sqrt(2 lambda / beta): keeping w costs lambda, zeroing it costs beta/2 w^2."""
    return math.sqrt(2.0 * lam / beta)


def hard_threshold(w: Tensor, t: float) -> Tensor:
    """H(w): entries with |w| <= t become 0. `hardshrink` is exactly H, in one kernel; writing
    into `empty_like(w)` keeps w's strides, from which a convolution picks its memory format."""
    return torch.hardshrink(w.detach(), t, out=torch.empty_like(w))


def complement(w: Tensor, t: float) -> Tensor:
    """w - H(w): only the entries that u zeroed (the notebook's sanity check, and the coupling)."""
    return w.detach() - hard_threshold(w, t)


def sparsified_names(model: nn.Module, sparsify: str | tuple[str, ...]) -> tuple[str, ...]:
    """Parameter names RVSM acts on, in the model's order: weights of conv and linear layers only,
    never biases or normalisation parameters.

    `sparsify` is "all", or one or more items, each a parameter name ("conv1.weight"), a layer
    name ("conv1", meaning its weight), a glob pattern over either ("layer1.*", "features.*.weight",
    `fnmatch` syntax: `*` also crosses dots), or an exclusion: "!" before any of these. Inclusions
    choose among the sparsifiable weights (none given: all of them); exclusions then remove.
    Raises `ConfigError` for an item that matches nothing, or a choice that leaves nothing.
    """
    params = dict(model.named_parameters())
    weights = tuple(f"{name}.weight" for name, m in model.named_modules()
                    if isinstance(m, SPARSIFIABLE) and f"{name}.weight" in params)
    if sparsify == "all":
        return weights
    items = (sparsify,) if isinstance(sparsify, str) else tuple(sparsify)
    include = [item for item in items if not item.startswith("!")]
    chosen = set() if include else set(weights)
    unknown = []
    for item in include:
        matched = _matching(item, weights)
        unknown += [] if matched else [item]
        chosen |= matched
    for item in (item[1:] for item in items if item.startswith("!")):
        if not _matching(item, tuple(params)):  # "!*.bn*" may name parameters that are never chosen
            unknown.append(f"!{item}")
        chosen -= _matching(item, weights)
    if unknown or not chosen:
        what = (f"{unknown!r} matches no sparsifiable tensor" if unknown else "leaves no tensor to sparsify")
        shown = ", ".join(weights[:12]) + (f", ... ({len(weights)} in all)" if len(weights) > 12 else "")
        raise ConfigError(f"sparsify={list(items)!r}: {what} of model {type(model).__name__} (conv and "
                          f"linear weights only: biases and normalisation parameters never are); "
                          f"allowed: {shown}")
    return tuple(w for w in weights if w in chosen)


SPARSIFIABLE = (nn.modules.conv._ConvNd, nn.Linear)
GLOB_CHARACTERS = frozenset("*?[")


def _matching(item: str, names: tuple[str, ...]) -> set[str]:
    """Names of parameters that `item` (a name, a layer name, or a glob over either) selects."""
    if GLOB_CHARACTERS.isdisjoint(item):
        return {name for name in names if name in (item, f"{item}.weight")}
    return {name for name in names
            if fnmatchcase(name, item) or fnmatchcase(name.rpartition(".")[0], item)}


def sparse_tensors(params: Params, names: Iterable[str], t: float | Mapping[str, float]) -> dict[str, Tensor]:
    """u for the sparsified tensors, by name (the other tensors of u are those of w); `t` is one
    threshold for all, or each tensor's (name -> t_l)."""
    return {name: hard_threshold(params[name], t if isinstance(t, (int, float)) else t[name]) for name in names}


@dataclass(frozen=True)
class Sparsity:
    sparsity: float          # zero fraction of the sparsified tensors
    sparsity_all: float      # zero fraction of all parameters, biases included
    nonzeros: int            # non-zero entries, all parameters
    params: int              # all entries
    compression: float       # params / nonzeros (params when nothing is left)
    layers: dict[str, float]  # zero fraction of each sparsified tensor


def measure_sparsity(tensors: Params, sparsified: Iterable[str]) -> Sparsity:
    """Zeros of a full set of tensors (u), counted on their device with a single sync."""
    sparsified = tuple(sparsified)
    zeros = dict(zip(tensors, torch.stack([(t == 0).sum() for t in tensors.values()]).tolist()))
    sizes = {name: t.numel() for name, t in tensors.items()}
    params, nonzeros = sum(sizes.values()), sum(sizes.values()) - sum(zeros.values())
    sparse_size = sum(sizes[n] for n in sparsified)
    return Sparsity(
        sparsity=sum(zeros[n] for n in sparsified) / sparse_size if sparse_size else 0.0,
        sparsity_all=(params - nonzeros) / params,
        nonzeros=nonzeros,
        params=params,
        compression=params / nonzeros if nonzeros else float(params),
        layers={n: zeros[n] / sizes[n] for n in sparsified},
    )


# --- update rules: one optimizer step each, returning the (detached) training loss -----------

@dataclass(frozen=True)
class Rvsm:
    """What a step needs besides the model: the thresholds, the coupling weight and its switch,
    and (fine-tuning only) the frozen support. `t` is one threshold for every sparsified tensor
    or each one's t_l by name (Python floats: reading them costs no device sync)."""

    t: float | Mapping[str, float]
    beta: float
    coupling: bool = False
    masks: Mapping[str, Tensor] | None = None  # name -> bool mask of u's support (finetune_step)

    def threshold(self, name: str) -> float:
        return self.t if isinstance(self.t, (int, float)) else self.t[name]


# step(model, sparse, x, y, optimizer, rv) -> loss; `sparse` maps names to the sparsified w.
Step = Callable[[nn.Module, dict[str, nn.Parameter], Tensor, Tensor, torch.optim.Optimizer, Rvsm], Tensor]


def plain_step(model, sparse, x, y, optimizer, rv: Rvsm) -> Tensor:
    """No thresholding. With lambda = 0, u = H(w) = w, so both rules reduce to this."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def classic_step(model, sparse, x, y, optimizer, rv: Rvsm) -> Tensor:
    """Dinh & Xin: w <- w - lr (grad f(w) + beta (w - u)), u = H(w)."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for name, w in sparse.items():
            w.grad.add_(complement(w, rv.threshold(name)), alpha=rv.beta)  # beta (w - u)
    optimizer.step()
    return loss.detach()


def modified_step(model, sparse, x, y, optimizer, rv: Rvsm) -> Tensor:
    """The notebook's rule: the forward pass runs at u = H(w); grad f(u) updates w."""
    optimizer.zero_grad(set_to_none=True)
    u = _u_leaves(sparse, rv)
    loss = F.cross_entropy(functional_call(model, u, (x,)), y)
    loss.backward()
    _grad_from_u(sparse, u, rv)
    optimizer.step()
    return loss.detach()


def notebook_step(model, sparse, x, y, optimizer, rv: Rvsm) -> Tensor:
    """The modified rule as the notebook computes it: the sparsified tensors' gradients come from
    the pass at u, every other tensor's from a second, dense pass at w."""
    optimizer.zero_grad(set_to_none=True)
    at_w = {name: w.detach() for name, w in sparse.items()}  # dense pass: grads of the others only
    F.cross_entropy(functional_call(model, at_w, (x,)), y).backward()
    u = _u_leaves(sparse, rv)
    others = {name: p.detach() for name, p in model.named_parameters() if name not in sparse}
    loss = F.cross_entropy(functional_call(model, {**others, **u}, (x,)), y)
    loss.backward()  # grads of u only
    _grad_from_u(sparse, u, rv)
    optimizer.step()
    return loss.detach()


def finetune_step(model, sparse, x, y, optimizer, rv: Rvsm) -> Tensor:
    """Masked fine-tuning: the support of u is frozen (`rv.masks`) and w = u. Only the non-zeros
    train: their gradients pass, the others' are zeroed, and after the step w is multiplied by
    the mask again (Adam's moments or weight decay may otherwise move a frozen zero)."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for name, w in sparse.items():
            w.grad.mul_(rv.masks[name])
    optimizer.step()
    with torch.no_grad():
        for name, w in sparse.items():
            w.mul_(rv.masks[name])
    return loss.detach()


def select_step(rule: str, lam: float, notebook_dense_pass: bool) -> Step:
    if notebook_dense_pass:
        return notebook_step
    if lam == 0:
        return plain_step
    return {"classic": classic_step, "modified": modified_step}[rule]


def _u_leaves(sparse: dict[str, nn.Parameter], rv: Rvsm) -> dict[str, Tensor]:
    """u = H(w) as fresh leaves of the graph: backward leaves grad f(u) in u.grad."""
    return {name: hard_threshold(w, rv.threshold(name)).requires_grad_() for name, w in sparse.items()}


def _grad_from_u(sparse: dict[str, nn.Parameter], u: dict[str, Tensor], rv: Rvsm) -> None:
    """w.grad = grad f(u), plus beta (w - u) when coupled."""
    with torch.no_grad():
        for name, w in sparse.items():
            w.grad = u[name].grad
            if rv.coupling:
                w.grad.add_(w - u[name], alpha=rv.beta)
