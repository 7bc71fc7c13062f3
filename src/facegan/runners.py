"""`orchestration.runner`: where the per-image stages spread their images (RUNNERS): `local` runs `workers`
processes on this machine (facegan.parallel.LocalPool), `dask` runs chunks as Prefect tasks on a Dask cluster
(facegan.dask_runner, imported only when chosen)."""

from __future__ import annotations

from collections.abc import Callable

from facegan.config import OrchestrationConfig, ParamsError
from facegan.parallel import LocalPool, Pool
from facegan.registry import pick


def _dask(cfg: OrchestrationConfig, workers: int) -> Pool:
    try:
        from facegan.dask_runner import DaskPool  # prefect-dask, dask and distributed: only when chosen
    except ImportError as e:
        raise ParamsError(
            f"orchestration.runner: dask needs prefect-dask ({e}): pip install 'facegan[dask]' "
            "(make install includes it)"
        ) from None
    return DaskPool(cfg)


RUNNERS: dict[str, Callable[[OrchestrationConfig, int], Pool]] = {
    "local": lambda cfg, workers: LocalPool(workers, cfg.chunk_size),
    "dask": _dask,
}


def make_pool(cfg: OrchestrationConfig, workers: int) -> Pool:
    """What the per-image stages take as `workers`: a Pool of the configured runner (`workers` is the local count)."""
    return pick(RUNNERS, cfg.runner, "orchestration.runner")(cfg, workers)
