"""Named configurations, as plain dicts of `TrainConfig` fields (a study file can refer to them)."""
from __future__ import annotations

PRESETS: dict[str, dict[str, object]] = {
    # The original TensorFlow notebook: modified RVSM on fc1 only, every other tensor trained on a
    # dense pass at w, N(0, 1) init, raw [0, 1] pixels, keep probability 0.75, 500 Adam steps.
    "notebook": {
        "model": "notebook_cnn",
        "init": "normal",
        "rule": "modified",
        "sparsify": "fc1",
        "notebook_dense_pass": True,
        "optimizer": "adam",
        "lr": 1e-3,
        "lam": 5e-4,
        "beta": 0.1,
        "batch_size": 128,
        "dropout": 0.25,
        "max_steps": 500,
        "normalize": False,
        "epochs": 2,
    },
}
