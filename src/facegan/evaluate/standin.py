"""A deterministic stand-in for the pytorch-fid Inception weight file, for tests and benchmarks.

Same architecture and parameter names as `pt_inception-2015-12-05-6726825d.pth`, random
convolutions (fixed seed) and batch-norm statistics calibrated on random images so activations
stay in range. It lets exactness tests compare our extractor with pytorch-fid when the real file
is absent; its FID values mean nothing. Its sha256 differs from the real file's, so the pipeline's
hash check refuses it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facegan.evaluate.inception import FIDInceptionV3


def write_stand_in_weights(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, 3, 299, 299, generator=gen))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
