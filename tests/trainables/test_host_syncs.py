"""The training step never waits for the device: per-tensor thresholds, their ramp and the
fine-tuning mask are Python numbers or stay on the device, so the host reads a tensor (a sync on
CUDA) only once per epoch, however many steps the epoch has."""
from __future__ import annotations

import pytest
import torch

from tests.trainables.helpers import tiny_config
from trainables.train import train

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def host_reads(monkeypatch, config) -> int:
    """How many times training read a tensor's value on the host."""
    count = 0

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            nonlocal count
            count += 1
            return original(self, *args, **kwargs)
        return read

    with monkeypatch.context() as patch:
        for name in READS:
            patch.setattr(torch.Tensor, name, counting(name))
        train(config, lambda metrics, state: None)
    return count


@pytest.mark.parametrize("rule", ["classic", "modified"])
def test_host_reads_do_not_grow_with_the_steps_of_an_epoch(monkeypatch, rule):
    fields = dict(rule=rule, threshold=1.5, threshold_scale="std",
                  threshold_multipliers=(("fc1", 2.0), ("conv*", 0.5)), ramp_epochs=1,
                  ramp="cubic", finetune_epochs=1, epochs=2, diagnostics_every=1)
    few = host_reads(monkeypatch, tiny_config(batch_size=64, **fields))    # 3 steps an epoch
    many = host_reads(monkeypatch, tiny_config(batch_size=16, **fields))   # 12 steps an epoch
    assert few > 0  # the counter sees the per-epoch reads (loss, accuracies, sparsity)
    assert many == few
