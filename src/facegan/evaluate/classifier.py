"""Attribute classifier: trained on the real packed images, it scores conditional generators.

`attribute_accuracy` asks: of the images generated for label y, how many does the classifier
read as y, per attribute? The classifier's own accuracy on held-out real images is reported
beside it, as the ceiling that number can reach.
"""

from __future__ import annotations

import json
import logging
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from facegan.config import ClassifierConfig
from facegan.data.packed import ZIP_NAME, load_packed
from facegan.errors import CheckpointError
from facegan.io import atomic_dir, load_torch, write_text
from facegan.models.weights import mismatch

log = logging.getLogger(__name__)
MODEL = "classifier.pt"


class AttributeNet(nn.Module):
    """Four strided conv blocks, global average pool, one softmax head per attribute."""

    def __init__(self, label_dims: list[int], width: int = 32):
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for cin, cout in pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(chans[-1], k) for k in label_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.features(x)
        return [head(h) for head in self.heads]


def to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


@torch.inference_mode()
def predict(net: AttributeNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, A) predicted value index per attribute."""
    net.eval()
    out = [
        torch.stack([lg.argmax(1) for lg in net(to_input(images[i : i + batch]))], 1)
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out).numpy()


def accuracy(pred: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    return {n: round(float((pred[:, a] == labels[:, a]).mean()), 4) for a, n in enumerate(names)}


def train_classifier(
    images: np.ndarray, labels: np.ndarray, label_dims: list[int], cfg: ClassifierConfig, seed: int = 0
) -> tuple[AttributeNet, np.ndarray]:
    """Train on `images`; returns the net and the indices held out for validation."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen).numpy()
    n_val = max(1, int(len(images) * cfg.val_fraction))
    val, tr = order[:n_val], order[n_val:]
    torch.manual_seed(seed)
    net = AttributeNet(label_dims)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    y_all = torch.from_numpy(labels)  # images stay uint8: each batch is made float on its own (not 4x the set)
    steps = cfg.epochs * max(1, len(tr) // cfg.batch_size)
    net.train()
    for _ in tqdm(range(steps), desc="attribute classifier", unit="step", dynamic_ncols=True, mininterval=1.0):
        idx = torch.from_numpy(tr)[torch.randint(len(tr), (cfg.batch_size,), generator=gen)]
        x = to_input(images[idx.numpy()])
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = sum((F.cross_entropy(lg, y_all[idx, a]) for a, lg in enumerate(net(x))), torch.zeros(()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net, val


def run_classifier(cfg: ClassifierConfig, packed: Path, dst: Path, seed: int = 0) -> dict:
    """Train the classifier of a packed dataset into dst (or record that it has no labels)."""
    images, labels, meta = load_packed(packed / ZIP_NAME)
    with atomic_dir(dst) as tmp:
        if labels is None:
            report: dict[str, Any] = {"status": "no labels"}
        else:
            names = meta["label_names"]
            dims = [len(meta["label_values"][n]) for n in names]
            net, val = train_classifier(images, labels, dims, cfg, seed)
            val_acc = accuracy(predict(net, images[val]), labels[val], names)
            torch.save(
                {
                    "state": net.state_dict(),
                    "label_dims": dims,
                    "label_names": names,
                    "label_values": meta["label_values"],
                    "resolution": images.shape[1],
                    "val_accuracy": val_acc,
                },
                tmp / MODEL,
            )
            report = {"status": "ok", "val_accuracy": val_acc, "n_train": len(images) - len(val), "n_val": len(val)}
            log.info("attribute classifier: held-out accuracy %s", val_acc)
        write_text(tmp / "metrics.json", json.dumps(report, indent=1))
    return report


def load_classifier(folder: Path) -> tuple[AttributeNet, dict] | None:
    path = folder / MODEL
    if not path.is_file():
        return None
    again = "remove it and run the classifier stage again"
    state = load_torch(path, again)
    dims = state.get("label_dims") if isinstance(state, dict) else None
    if not isinstance(dims, list) or not dims or not all(isinstance(k, int) and k >= 1 for k in dims):
        kind = f"keys: {', '.join(map(str, sorted(state)[:8]))}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an attribute classifier of the classifier stage ({kind}); {again}")
    net = AttributeNet(dims)
    problem = mismatch(net.state_dict(), state.get("state"))
    if problem:
        raise CheckpointError(
            f"{path}: its weights do not fit a classifier of {len(dims)} attributes: {problem}; {again}"
        )
    net.load_state_dict(state["state"])
    return net.eval(), state
