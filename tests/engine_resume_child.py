"""One small training run in its own process, for test_engine_resume:

    python tests/engine_resume_child.py CHECKPOINT RESULT_JSON

Prints `epoch N` once epoch N's checkpoint is on disk, so the parent knows when to SIGKILL it. Uses every
kind of state a resume must restore: dropout (global RNG), all augmentations, momentum, warmup+cosine,
early stopping, L1 and label smoothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from cifarbench.engine import fit
from cifarbench.io import write_json_atomic
from engine_helpers import comparable, make_split, tiny_model, train_config

EPOCHS = 6


def main(checkpoint: str, out: str) -> None:
    torch.set_num_threads(1)  # see engine_helpers.one_torch_thread
    cfg = train_config(
        epochs=EPOCHS,
        augment={"policy": "all"},
        schedule={"name": "cosine", "warmup_epochs": 1},
        early_stop={"enabled": True, "patience": EPOCHS},
        l1=1e-5,
        label_smoothing=0.1,
    )
    model = tiny_model(dropout=0.3)
    result = fit(
        model, make_split(500), make_split(200, seed=1), cfg, seed=3,
        checkpoint=Path(checkpoint), on_epoch=lambda r: print(f"epoch {r.epoch}", flush=True),
    )
    weights = hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in model.state_dict().values()))
    write_json_atomic(out, {
        "history": comparable(result.history), "status": result.status, "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc, "weights_sha256": weights.hexdigest(),
    })


if __name__ == "__main__":
    main(*sys.argv[1:])
