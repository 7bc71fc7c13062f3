"""The training loop: one loop for every trainer (GANs, the VAE, CycleGAN) — resume, progress bar, sample
grids, checkpoints and the loss log.

Randomness per step (batches, flips, noise, fake labels, augmentations) is derived from (seed, step) alone,
so a run resumed from any checkpoint continues exactly as the uninterrupted run would have (bitwise on CPU).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from facegan.errors import CheckpointAhead, CheckpointError, FolderBusy, OutputError, TrainingDiverged
from facegan.io import atomic_dir, exclusive, write_text
from facegan.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from facegan.train.dist import Dist, teardown

log = logging.getLogger(__name__)

DIVERGED = "diverged.pt"  # the state when a loss became non-finite, beside work/checkpoint.pt (never over it)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    steps: int  # the step the model is at
    seconds: float  # of the steps this run trained (a resumed run: those after the checkpoint it resumed from)
    losses: list[dict[str, float]]
    trained: int = 0  # steps this run trained

    @property
    def seconds_per_step(self) -> float | None:
        """Wall seconds per step of the steps this run trained; None when it trained none (resumed at the end)."""
        return self.seconds / self.trained if self.trained else None


def to_csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@contextlib.contextmanager
def held(work: Path, dist: Dist) -> Iterator[None]:
    """The work folder for this run alone, from before the data is loaded to the copy to dst: a second training
    into it (a second `facegan train` of the dataset, a scheduled flow run while the last is still training) stops
    with FolderBusy before it loads, reads or removes anything. Under DDP the ranks are one run: rank 0 takes the
    lock, and every rank learns whether it could before any touches the folder."""
    with contextlib.ExitStack() as stack:
        failed: Exception | None = None
        if dist.main:
            try:
                stack.enter_context(exclusive(work, "training"))
            except Exception as e:  # noqa: BLE001 - every rank must hear of it, whatever it is, or they would go on
                failed = e
        code = 0.0 if failed is None else 1.0 if isinstance(failed, FolderBusy) else 2.0
        code = dist.all_sum([code])[0]
        if failed is not None:
            raise failed
        if code == 1.0:
            raise FolderBusy(f"{work}: another training is writing here (rank 0 found it held)")
        if code:
            raise FolderBusy(f"{work}: rank 0 could not take the training lock (its log says why)")
        yield


class Loop:
    """Resume from work/checkpoint.pt, step with a progress bar, sample grids every `sample_every` steps,
    checkpoints every `checkpoint_every` steps (a non-finite loss: the state into work/diverged.pt), losses.csv at the
    end.

    Everything is written to `work` while training (default: `dst`); at the end `work` is copied to `dst` in
    one atomic step. A stage points `work` outside its DVC output, which DVC deletes before rerunning it, so a
    killed run resumes instead of starting over. `extra` is saved with every checkpoint (e.g. the in-training
    FID history, the provenance: the code and data the checkpoint was made from)."""

    def __init__(
        self,
        trainer,
        dst: Path,
        steps: int,
        checkpoint_every: int,
        sample_every: int,
        desc: str = "train",
        work: Path | None = None,
    ):
        self.trainer, self.dst, self.steps, self.desc = trainer, dst, steps, desc
        self.work = work or dst
        self.checkpoint_every, self.sample_every = checkpoint_every, sample_every
        self.extra: dict = {}

    def checkpoint(self, path: Path | None = None) -> None:
        save_checkpoint(path or self.work / CHECKPOINT, {**self.trainer.state_dict(), **self.extra})

    def resume(self, stale: str = "raise") -> dict | None:
        """Load work/checkpoint.pt into the trainer when it exists; returns its state. A checkpoint of other
        params, code or data raises CheckpointError (`stale="raise"`) or, with `stale="restart"` (what stages do),
        its folder is set aside beside it with a warning naming it, and training starts fresh: an edited param must
        not cost a killed run's hours (restoring the param and moving the folder back resumes it)."""
        path = self.work / CHECKPOINT
        if not path.is_file():
            return None
        try:
            state = load_checkpoint(path)
            self._check_provenance(state.get("provenance"))
            self.trainer.load_state_dict(state)
        except CheckpointError as e:
            message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
            if stale != "restart":
                raise CheckpointError(message) from None
            if not self.trainer.dist.main:  # under DDP rank 0 sets the folder aside and says where
                return None
            if isinstance(e, CheckpointAhead):  # this run, only further on: kept, not removed
                aside, home = self._set_aside(f"step{e.step}")
                log.warning(
                    "%s: the checkpoint is at step %d, past the %d steps asked now: its folder is kept as %s (to "
                    "continue it, raise the steps to %d or more and move it back in place of %s); starting fresh",
                    path,
                    e.step,
                    self.steps,
                    aside,
                    e.step,
                    home,
                )
                return None
            aside, home = self._set_aside("stale")
            log.warning(
                "%s; its folder is kept as %s (to continue it, restore what changed and move it back in place of %s); "
                "starting fresh",
                message,
                aside,
                home,
            )
            return None
        log.info("resumed from %s at step %d", path, self.trainer.step_done)
        return state

    def _set_aside(self, tag: str) -> tuple[Path, Path]:
        """Move the work folder to `<work>.<tag>` beside it (a name not taken: -2, -3, ... after it); (where it went,
        where it goes back). A work folder that is a link (to a bigger disk) keeps its link: its target moves beside
        itself and an empty one takes its place, so the fresh run writes there too; where the target's folder
        refuses (read-only, a mount point), the link itself is moved. Rank 0 only (DDP)."""
        if self.work.is_symlink():
            target = self.work.resolve()
            aside = self._free_name(target, tag)
            try:
                target.rename(aside)
            except OSError as e:
                log.warning(
                    "%s: cannot set the folder %s aside there (%s): moving the link instead", self.work, target, e
                )
            else:
                try:
                    target.mkdir()
                except OSError as e:  # (a full disk: the rename took no space) the run goes back, nothing moved
                    aside.rename(target)
                    raise OutputError(
                        f"{target}: cannot make a fresh folder there for the new run ({e.strerror or e}); the earlier "
                        "run stays where it was: free the disk, or move it away yourself"
                    ) from None
                return aside, target
        aside = self._free_name(self.work, tag)
        self.work.rename(aside)
        return aside, self.work

    @staticmethod
    def _free_name(folder: Path, tag: str) -> Path:
        """`<folder>.<tag>`, or -2, -3, ... after it: the first name not taken."""
        aside = folder.with_name(f"{folder.name}.{tag}")
        n = 1
        while os.path.lexists(aside):  # a link to nothing there too: the rename would fail on it
            n += 1
            aside = folder.with_name(f"{folder.name}.{tag}-{n}")
        return aside

    def _check_provenance(self, made_from: dict | None) -> None:
        now = self.extra.get("provenance")
        if made_from is None or now is None:
            return  # written by hand or by an older facegan: nothing to compare
        # a key the checkpoint lacks was not recorded then (an older facegan): not compared
        changed = [k for k in sorted(now) if k in made_from and made_from[k] != now[k]]
        if changed:
            what = " and ".join("pretrained checkpoint (train.init_from)" if k == "pretrained" else k for k in changed)
            raise CheckpointError(f"the checkpoint was made from other {what} (it is not this run's)")

    def _diverged(self, e: TrainingDiverged) -> TrainingDiverged:
        """A non-finite loss: the state as it is now (the diverged weights, the losses up to the bad step) saved
        beside the checkpoint for a look, never over it: work/checkpoint.pt stays the last one of finite losses."""
        if not self.trainer.dist.main:
            return e
        aside = self.work / DIVERGED
        self.checkpoint(aside)
        last = self.work / CHECKPOINT
        kept = (
            f"the last checkpoint of finite losses, {last} (step {load_checkpoint(last)['step']}), is kept: a resumed "
            "run starts from it (on the CPU, with the same settings, it repeats the same steps)"
            if last.is_file()
            else "no checkpoint was made before it"
        )
        when = self.trainer.step_done  # a step's losses are read during the next: the state may be one step on
        return TrainingDiverged(f"{e}; the state when it was found, at step {when}, is saved in {aside}; {kept}")

    def run(
        self, on_step: Callable[[dict, int], None] | None = None, after_step: Callable[[int], None] | None = None
    ) -> TrainResult:
        """Train to `steps`; `on_step(losses, step)` gets every step's losses (e.g. a tracker's log_metrics), during
        the next step (`Stepper.advance`); `after_step(step)` runs after each step on the main process, before a due
        checkpoint."""
        t, main = self.trainer, self.trainer.dist.main  # under DDP only rank 0 writes files and reports
        start = t.step_done
        t0 = time.perf_counter()
        bar = tqdm(
            range(start, self.steps),
            initial=start,
            total=self.steps,
            desc=self.desc,
            unit="step",
            dynamic_ncols=True,
            disable=not main,
        )
        try:
            for _ in bar:
                done = t.step_done + 1
                due = done % self.checkpoint_every == 0 or done == self.steps
                try:
                    rows = t.advance(read_all=due)  # a step's values are read during the next (before a checkpoint)
                except TrainingDiverged as e:
                    raise self._diverged(e) from None
                if rows:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in rows[-1].items() if k.startswith("loss")}, refresh=False)
                if not main:
                    continue
                if on_step:
                    for row in rows:
                        on_step(row, int(row["step"]))
                if done % self.sample_every == 0 or done == self.steps:
                    t.write_samples(self.work / "progress" / f"step{done:07d}.png")
                if after_step:
                    after_step(done)
                if due:
                    self.checkpoint()
            bar.close()
            seconds = time.perf_counter() - t0
            if main:
                t.write_samples(self.work / "samples.png", final=True)
                write_text(self.work / "losses.csv", to_csv(t.history, t.fields))
                if self.work != self.dst:
                    with atomic_dir(self.dst) as tmp:
                        shutil.copytree(self.work, tmp, dirs_exist_ok=True)
            log.info(
                "trained %d steps in %.1f s (%.3f s/step)",
                self.steps - start,
                seconds,
                seconds / max(1, self.steps - start),
            )
        except BaseException:
            teardown(failed=True)
            raise
        teardown()
        return TrainResult(self.dst / CHECKPOINT, self.steps, seconds, t.history, self.steps - start)
