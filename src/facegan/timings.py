"""`facegan timings`: the wall time of every stage of the latest execution (MLflow stage runs: end - start) and
its share of the total; optionally logged onto the parent runs (artifact timings.md, metrics time.<stage>)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facegan.config import TRANSFER_PRETRAIN, TrackingConfig
from facegan.errors import TrackingError
from facegan.runs_table import human_seconds, wall_seconds

ARTIFACT = "timings.md"
BAR = 24  # characters of the longest stage's bar


@dataclass(frozen=True)
class Timing:
    """One stage as DVC names it (train@cartoon, pretrain, finetune@baseline, cyclegan) and its seconds."""

    stage: str
    seconds: float
    metric: str  # on its parent run: time.train, time.finetune.baseline, ...


@dataclass
class Execution:
    """A parent run (a dataset's pipeline, the transfer story, or the CycleGAN run itself) and its stages."""

    run_id: str
    name: str
    timings: list[Timing] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.timings)


def stage_name(run: Any, parent_kind: str) -> tuple[str, str]:
    """(DVC stage name, metric suffix) of a stage run under a parent of `parent_kind`."""
    tags = run.data.tags
    stage, variant = tags.get("stage", "?"), tags.get("variant")
    if variant == TRANSFER_PRETRAIN:
        return "pretrain", "pretrain"
    if variant:  # a fine-tune run's train and evaluate are one DVC stage: finetune@<row>-<seed>
        row, _, seed = variant.rpartition("-s")
        name = f"{row}-{seed}" if row and seed.isdigit() else variant
        return f"finetune@{name}", f"finetune.{variant}"
    if parent_kind == "pipeline":
        return f"{stage}@{tags.get('dataset', '?')}", stage
    return stage, stage


def execution(parent: Any, stages: list) -> Execution:
    """The timings of one parent's stage runs (seconds of runs that share a DVC stage added up)."""
    from facegan.track import KIND

    kind = parent.data.tags.get(KIND, "")
    seconds: dict[tuple[str, str], float] = {}
    for r in stages:
        if r.data.tags.get(KIND, "stage") != "stage":  # e.g. transfer-table's row summaries: inside its time
            continue
        s = wall_seconds(r)
        if s is None:
            s = r.data.metrics.get("stage_seconds")
        if s is not None:
            key = stage_name(r, kind)
            seconds[key] = seconds.get(key, 0.0) + s
    name = parent.data.tags.get("mlflow.runName", parent.info.run_id[:8])
    return Execution(parent.info.run_id, name, [Timing(st, s, f"time.{m}") for (st, m), s in sorted(seconds.items())])


def collect(cfg: TrackingConfig, experiments: list[str] | None = None) -> list[Execution]:
    """The latest execution's stage timings from MLflow (see track.latest_execution); TrackingError when none."""
    from facegan import track

    found = [execution(parent, stages) for parent, stages in track.latest_execution(cfg, experiments)]
    found = [e for e in found if e.timings]
    if not found:
        raise TrackingError(
            f"no finished pipeline, transfer or CycleGAN runs in MLflow experiment "
            f"{', '.join(experiments or [cfg.experiment])!r} at {track.tracking_uri(cfg)}: run `dvc repro` first"
        )
    return found


def ranked(executions: list[Execution]) -> list[Timing]:
    """Every stage, longest first."""
    return sorted((t for e in executions for t in e.timings), key=lambda t: (-t.seconds, t.stage))


def render(executions: list[Execution], top: int = 0, header: bool = True) -> str:
    """Plain-text table: stage, time, share of the total and a bar, longest first, then the total; with `top`,
    the rest of the stages as one line."""
    rows = ranked(executions)
    total = sum(t.seconds for t in rows) or 1.0
    shown, rest = (rows[:top], rows[top:]) if top and len(rows) > top + 1 else (rows, [])
    lines = [(t.stage, t.seconds) for t in shown]
    if rest:
        lines.append((f"({len(rest)} more stages)", sum(t.seconds for t in rest)))
    width = max([len(s) for s, _ in lines] + [5])
    longest = max((s for _, s in lines), default=1.0) or 1.0
    out = [f"{'stage':<{width}}  {'time':>8}  {'share':>6}"] if header else []
    for stage, s in lines:
        bar = "█" * max(1, round(BAR * s / longest)) if s > 0 else ""
        out.append(f"{stage:<{width}}  {human_seconds(s):>8}  {s / total:>6.1%}  {bar}")
    out.append(f"{'total':<{width}}  {human_seconds(total):>8}  {1:>6.0%}")
    return "\n".join(out)


def to_markdown(executions: list[Execution]) -> str:
    """timings.md: every stage of the execution, longest first, with the total."""
    rows = ranked(executions)
    total = sum(t.seconds for t in rows) or 1.0
    lines = ["| stage | seconds | time | share |", "|---|---:|---:|---:|"]
    lines += [f"| {t.stage} | {t.seconds:.1f} | {human_seconds(t.seconds)} | {t.seconds / total:.1%} |" for t in rows]
    lines.append(f"| total | {total:.1f} | {human_seconds(total)} | 100% |")
    return "\n".join(lines) + "\n"


def log(cfg: TrackingConfig, executions: list[Execution]) -> int:
    """timings.md (the whole execution) and metrics time.<stage> + time.total (its own stages) on every parent
    run; returns how many runs got them."""
    from facegan import track

    text = to_markdown(executions)
    for e in executions:
        metrics = {t.metric: t.seconds for t in e.timings} | {"time.total": e.seconds}
        track.log_table(cfg, e.run_id, ARTIFACT, text, metrics)
    return len(executions)
