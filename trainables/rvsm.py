"""Relaxed variable splitting (RVSM): the maths, as small functions on tensors.

RVSM trains w while a sparse copy u = H(w) is kept, where H zeroes every entry with |w| <= t and
t = sqrt(2 lambda / beta) is the minimiser of lambda ||u||_0 + beta/2 ||u - w||^2. The sparse
model u is the one that is evaluated and kept. Each update rule below is one optimizer step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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
    """Parameter names RVSM acts on: conv and linear weights, never biases.

    `sparsify` is "all", "fc1", or names of parameters ("conv1.weight") or layers ("conv1").
    """
    weights = tuple(f"{name}.weight" for name, m in model.named_modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear)))
    wanted = (sparsify,) if sparsify == "fc1" else sparsify
    if wanted == "all":
        return weights
    names = tuple(n if n in weights else f"{n}.weight" for n in wanted)
    unknown = [w for w, n in zip(wanted, names) if n not in weights]
    if unknown:
        raise ConfigError(f"sparsify={list(wanted)!r}: {unknown!r} not sparsifiable in model "
                          f"{type(model).__name__} (biases never are); allowed: {', '.join(weights)}")
    return names


def sparse_tensors(params: Params, names: Iterable[str], t: float) -> dict[str, Tensor]:
    """u for the sparsified tensors, by name (the other tensors of u are those of w)."""
    return {name: hard_threshold(params[name], t) for name in names}


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
    """What a step needs besides the model: the threshold, the coupling weight and its switch."""

    t: float
    beta: float
    coupling: bool = False


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
        for w in sparse.values():
            w.grad.add_(complement(w, rv.t), alpha=rv.beta)  # beta (w - u)
    optimizer.step()
    return loss.detach()


def modified_step(model, sparse, x, y, optimizer, rv: Rvsm) -> Tensor:
    """The notebook's rule: the forward pass runs at u = H(w); grad f(u) updates w."""
    optimizer.zero_grad(set_to_none=True)
    u = _u_leaves(sparse, rv.t)
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
    u = _u_leaves(sparse, rv.t)
    others = {name: p.detach() for name, p in model.named_parameters() if name not in sparse}
    loss = F.cross_entropy(functional_call(model, {**others, **u}, (x,)), y)
    loss.backward()  # grads of u only
    _grad_from_u(sparse, u, rv)
    optimizer.step()
    return loss.detach()


def select_step(rule: str, lam: float, notebook_dense_pass: bool) -> Step:
    if notebook_dense_pass:
        return notebook_step
    if lam == 0:
        return plain_step
    return {"classic": classic_step, "modified": modified_step}[rule]


def _u_leaves(sparse: dict[str, nn.Parameter], t: float) -> dict[str, Tensor]:
    """u = H(w) as fresh leaves of the graph: backward leaves grad f(u) in u.grad."""
    return {name: hard_threshold(w, t).requires_grad_() for name, w in sparse.items()}


def _grad_from_u(sparse: dict[str, nn.Parameter], u: dict[str, Tensor], rv: Rvsm) -> None:
    """w.grad = grad f(u), plus beta (w - u) when coupled."""
    with torch.no_grad():
        for name, w in sparse.items():
            w.grad = u[name].grad
            if rv.coupling:
                w.grad.add_(w - u[name], alpha=rv.beta)
