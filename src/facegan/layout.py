"""Where everything lives under the project root: one dataset's folders (all DVC outputs, never in git)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Folders of one dataset under the project root (all DVC outputs, never in git)."""

    root: Path
    dataset: str
    variant: str | None = None  # several models of one dataset (Prefect): data/runs/<dataset>/<variant>/

    def _d(self, *parts: str) -> Path:
        return self.root / "data" / Path(*parts)

    def _run(self, kind: str) -> Path:
        return self._d("runs", self.dataset, self.variant, kind) if self.variant else self._d(kind, self.dataset)

    @property
    def raw(self) -> Path:
        return self._d("raw", self.dataset)

    def interim(self, stage: str) -> Path:
        return self._d("interim", self.dataset, stage)

    @property
    def packed(self) -> Path:
        return self._d("processed", self.dataset)

    @property
    def stats(self) -> Path:
        return self._d("stats", self.dataset)

    @property
    def model(self) -> Path:
        return self._run("models")

    @property
    def checkpoints(self) -> Path:
        """Where training writes while it runs (checkpoints, grids): outside the DVC output, which DVC deletes
        before rerunning a stage, so a killed run resumes; not tracked by DVC or git (.gitignore)."""
        return self._d("checkpoints", self.dataset, self.variant or "main")

    @property
    def classifier(self) -> Path:
        return self._d("classifiers", self.dataset)

    @property
    def evaluation(self) -> Path:
        return self._run("eval")

    @property
    def report(self) -> Path:
        return self._run("reports")

    def io(self, stage: str) -> tuple[list[Path], list[Path]]:
        """(inputs, outputs) of a stage, as dvc.yaml declares them (used for Prefect cache keys)."""
        i = self.interim
        return {
            "generate": ([], [self.raw]),
            "detect": ([self.raw], [i("detect")]),
            "verify": ([self.raw, i("detect")], [i("verify")]),
            "align": ([self.raw, i("verify")], [i("align")]),
            "matte": ([i("align")], [i("matte")]),
            "upscale": ([i("matte")], [i("upscale")]),
            "quality": ([self.raw, i("upscale")], [i("quality")]),
            "pack": ([self.raw, i("quality")], [self.packed]),
            "classifier": ([self.packed], [self.classifier]),
            "refstats": ([self.packed, self.classifier], [self.stats]),
            "train": ([self.packed, self.stats, self.classifier], [self.model]),
            "evaluate": ([self.packed, self.model, self.stats, self.classifier], [self.evaluation]),
            "report": ([i("quality"), self.packed, self.model, self.evaluation], [self.report]),
            # over two datasets: every packed set and statistics (a superset: never stale)
            "cyclegan": ([self._d("processed"), self._d("stats")], [self._d("cyclegan")]),
        }[stage]

    def params(self, stage: str) -> list[str]:
        """The params a stage reads (dotted keys), as dvc.yaml lists them: a Prefect cache key and the record of
        which params wrote a stage's outputs cover these alone, so a change elsewhere (train.steps) reruns what
        `dvc repro` reruns, no more."""
        ds = f"datasets.{self.dataset}"
        evaluate = ["evaluate.mode", "evaluate.batch_size", "evaluate.inception_weights"]
        return {
            "generate": [f"{ds}.source", "workers"],
            **{s: [f"{ds}.{s}"] for s in ("detect", "verify", "align", "matte", "upscale", "quality", "pack")},
            "classifier": ["evaluate.classifier", "evaluate.seed"],
            "refstats": ["evaluate.extractors", "evaluate.mode", "evaluate.max_real", "evaluate.seed", *evaluate[1:]],
            "train": ["train", *evaluate, "evaluate.seed"],
            "evaluate": ["evaluate"],
            "report": ["tracking"],
            "cyclegan": ["cyclegan", "evaluate"],
        }[stage]


# the per-image preprocessing stages, in order: each writes data/interim/<dataset>/<stage>/ with a summary
PER_IMAGE = ("detect", "verify", "align", "matte", "upscale", "quality")
