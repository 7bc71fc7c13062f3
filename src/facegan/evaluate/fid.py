"""Frechet distance (FID) and kernel inception distance (KID) from features, and their statistics files."""

from __future__ import annotations

import errno
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg

from facegan.errors import DamagedRecord, first_line
from facegan.io import atomic_file

log = logging.getLogger(__name__)

# what to do about statistics that do not fit or no longer read
REFSTATS_AGAIN = "re-run refstats (`dvc repro -f refstats@<dataset>` or `facegan refstats <dataset>`)"
MIN_STABLE = 2000  # below this many samples FID is visibly biased; we warn


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of features (+ the features, for KID) and where they came from."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    meta: dict

    @property
    def n(self) -> int:
        return len(self.features)


def feature_stats(features: np.ndarray, warn_small: bool = True, **meta) -> FeatureStats:
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors, got shape {features.shape}")
    if warn_small and len(features) < MIN_STABLE:
        log.warning(
            "statistics from only %d images (%s); FID is biased upward below ~%d",
            len(features),
            meta.get("extractor", "?"),
            MIN_STABLE,
        )
    return FeatureStats(features.mean(axis=0), np.cov(features, rowvar=False), features, meta)


def save_stats(path: Path, stats: FeatureStats) -> None:
    with atomic_file(path, ".npz") as tmp:  # np.savez adds .npz to a name without it
        np.savez(
            tmp,
            mu=stats.mu,
            sigma=stats.sigma,
            features=stats.features.astype(np.float32),
            meta=np.array(json.dumps(stats.meta, sort_keys=True)),
        )


def load_stats(path: Path) -> FeatureStats:
    """Statistics `save_stats` wrote; DamagedRecord naming the file when they no longer read (a copy cut off, a file
    of another kind under that name); what opening it raises (FileNotFoundError, PermissionError) as it is."""

    def damaged(why: str) -> DamagedRecord:
        return DamagedRecord(f"{path}: not feature statistics ({why}): {REFSTATS_AGAIN}")

    with open(path, "rb") as f:
        if not zipfile.is_zipfile(f):  # np.load would take other bytes for a pickle it refuses to load
            raise damaged("not an .npz archive: cut off, or another file")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as z:
                mu, sigma, features = z["mu"], z["sigma"], z["features"]
                meta = json.loads(str(z["meta"]))
        except (EOFError, KeyError, ValueError, NotImplementedError, zipfile.BadZipFile) as e:  # bytes that do not read
            raise damaged(e.args[0] if isinstance(e, KeyError) and e.args else first_line(e, 120)) from None
        except OSError as e:  # an offset in the archive pointing nowhere; other errors (EIO) are what they are
            if e.errno != errno.EINVAL:
                raise
            raise damaged(first_line(e, 120)) from None
    arrays = {"mu": mu, "sigma": sigma, "features": features}
    d = mu.shape[0] if mu.ndim == 1 else -1
    if not (
        all(np.issubdtype(a.dtype, np.floating) for a in arrays.values())
        and d > 0
        and np.atleast_2d(sigma).shape == (d, d)  # np.cov of one feature is 0-d
        and features.ndim == 2
        and features.shape[1] == d
    ):
        raise damaged(", ".join(f"{k} {a.dtype}{list(a.shape)}" for k, a in arrays.items()))
    if not isinstance(meta, dict):
        raise damaged(f"its meta is a JSON {type(meta).__name__}")
    return FeatureStats(mu, sigma, features.astype(np.float64), meta)


def extractors_of(record: dict, path: Path, again: str) -> dict[str, dict]:
    """The per-extractor entries of a record refstats or evaluate wrote (stats.json, metrics.json), each with its
    status "ok" or the reason it was not; DamagedRecord naming `path` and saying `again` when they are not that."""
    entries = record.get("extractors")
    if not isinstance(entries, dict) or not all(
        isinstance(v, dict) and (v.get("status") == "ok" or isinstance(v.get("reason"), str)) for v in entries.values()
    ):
        raise DamagedRecord(f"{path}: its extractors are not a record of them (each 'ok' or why not): {again}")
    return entries


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), computed as pytorch-fid does."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different shapes: {mu1.shape} vs {mu2.shape}")
    if not (
        np.isfinite(sigma1).all() and np.isfinite(sigma2).all() and np.isfinite(mu1).all() and np.isfinite(mu2).all()
    ):
        raise ValueError("non-finite mean or covariance: the features contain NaN/inf (diverged generator?)")
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as said:  # scipy's, raw with its source line: one log line instead
        warnings.simplefilter("always")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    for w in said:  # any other warning goes on as it came, under the caller's filters
        if not issubclass(w.category, linalg.LinAlgWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if any(issubclass(w.category, linalg.LinAlgWarning) for w in said):
        log.warning(
            "the product of the covariances is singular (images of (nearly) the same features: a collapsed set?): "
            "its square root, and so the distance, may be inaccurate"
        )
    if not np.isfinite(covmean).all():
        log.warning("singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kid_spread(std: float | None) -> str:
    """`kid`'s std as printed: six decimals, or why there is none."""
    return "n/a (every subset is both sets whole)" if std is None else f"{std:.6f}"


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float | None]:
    """Unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets: (mean, std). The std is None
    where both sets hold the same number of images, at most `subset_size`: every subset is then both sets whole
    (as in the reference implementations), and a std of 0 would claim a precision that was never measured."""
    d = real.shape[1]
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(vals)), None if m == len(real) == len(fake) else float(np.std(vals))
