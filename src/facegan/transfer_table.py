"""The transfer study's summary (stage `transfer-table`): what every run of facegan.transfer wrote, as one table.

Per row: the final Frechet distance of each extractor (evaluate stage) as mean +- std over the seeds, the seed
range and whether it clears the baseline's (the ranges do not overlap), the distance at fixed kimg from the
in-training curve, and where D's overfitting (r_t, the mean sign of D on the reals) and ADA's p ended. Beside
it: the source model's own distance and the noise floor (two disjoint halves of the real target set).
Written to data/transfer/ (table, curves, plots) and MLflow (one child run per row under the study's parent).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from facegan.config import Params, load_params
from facegan.data.packed import ZIP_NAME, image_names, open_packed
from facegan.errors import StageInputMissing
from facegan.io import atomic_dir, read_json, read_numbers_csv, sha256_cached, write_text
from facegan.layout import Layout
from facegan.transfer import (
    OFF,
    PRETRAIN,
    StaleRun,
    check_pretrained,
    check_trained,
    pretrained_checkpoint,
    run_params,
    runs,
)

log = logging.getLogger(__name__)

TABLE_DIR = Path("data") / "transfer"
EXTRACTORS = ("inception", "dlib", "attributes")
WINDOWS = 25  # points of the smoothed r_t / ADA p curves


def _read_csv(path: Path) -> list[dict[str, float]]:
    return read_numbers_csv(path) if path.is_file() else []


def _windows(rows: list[dict[str, float]], key: str, batch: int) -> list[tuple[float, float]]:
    """(kimg at the window's end, mean of `key`) over WINDOWS equal windows of the logged steps."""
    have = [(r["step"], r[key]) for r in rows if key in r]
    if not have:
        return []
    size = max(1, math.ceil(len(have) / WINDOWS))
    return [
        (have[min(i + size, len(have)) - 1][0] * batch / 1000, statistics.fmean(v for _, v in have[i : i + size]))
        for i in range(0, len(have), size)
    ]


def run_record(p: Params, row: str, seed: int, root: Path) -> dict[str, Any]:
    """What one run left: final distances (evaluate), the in-training curve, r_t and ADA p over kimg."""
    from facegan.train.checkpoint import CHECKPOINT  # torch: not for importing this module

    rp, dataset, variant = run_params(p, row, root, seed)
    at, batch = Layout(root, dataset, variant), rp.train.batch_size
    metrics = at.evaluation / "metrics.json"
    if not metrics.is_file():
        raise StageInputMissing(
            f"{metrics}: run {variant} of the transfer study has not been evaluated: "
            f"`facegan transfer finetune {row} --seed {seed}` (or `dvc repro` the transfer stages)"
        )
    ev = read_json(metrics, "an evaluation's metrics")
    step = _check_current(rp, row, seed, at.model / CHECKPOINT)
    _check_scored(rp, ev, metrics, f"fine-tune it again: `facegan transfer finetune {row} --seed {seed}`")
    losses = _read_csv(at.model / "losses.csv")
    return {
        "final": {k: v for k in EXTRACTORS if _finite(v := ev.get(f"fd_{k}"))},
        "fd_curve": [(r["step"] * batch / 1000, r["fd"]) for r in _read_csv(at.model / "fid.csv")],
        "curve_extractor": rp.train.fid_extractor,  # fid.csv's
        "rt": _windows(losses, "d_real_sign", batch),
        "ada_p": _windows(losses, "ada_p", batch),
        "kimg": step * batch / 1000,
    }


def _check_scored(rp: Params, ev: dict[str, Any], metrics: Path, again: str) -> None:
    """StaleRun when an evaluation drew another number of samples, or another mode, than the study's evaluate
    today: the distance's bias depends on the sample count, so a row scored on more samples looked better."""
    want = rp.evaluate  # the study's: transfer.num_samples where set (run_params)
    said = [
        f"{k} {ev[k]!r} -> {getattr(want, k)!r}"
        for k in ("num_samples", "mode")
        if k in ev and ev[k] != getattr(want, k)
    ]
    if said:
        raise StaleRun(f"{metrics}: scored with other evaluate settings than today's ({'; '.join(said)}); {again}")


def _check_current(rp: Params, row: str, seed: int, checkpoint: Path) -> int:
    """The step the run's model is at; StaleRun when the run's checkpoint was made with another train config than
    the row's today (init_from's folder aside: the project may have moved, or run in a DVC experiment's copy), or
    from another pretrained model (its hash, where the checkpoint records one: older ones do not)."""
    from facegan.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    again = f"fine-tune it again: `facegan transfer finetune {row} --seed {seed}` (or `dvc repro`)"
    init = rp.train.init_from
    if bool(state["config"].get("init_from")) != bool(init):
        then = "fine-tuned from a pretrained model" if not init else "trained from scratch"
        raise StaleRun(
            f"{checkpoint}: {then}, and the row {'trains from scratch' if not init else 'fine-tunes'} now; {again}"
        )
    now = rp.train.model_copy(update={"init_from": None})
    check_trained(
        checkpoint, {**state, "config": {**state["config"], "init_from": None}}, now, "train", "the run", again
    )
    made_from = state.get("provenance") or {}
    if init and "pretrained" in made_from and not Path(init).is_file():
        raise StageInputMissing(
            f"no pretrained model at {init} to compare {checkpoint} with: run `facegan transfer pretrain`"
        )
    if init and "pretrained" in made_from and made_from["pretrained"] != sha256_cached(Path(init)):
        raise StaleRun(f"{checkpoint}: fine-tuned from another pretrained model than {init} has now; {again}")
    return int(state["step"])


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _spread(values: list[float]) -> dict[str, float] | None:
    """mean, std, min, max and n of the finite values (a NaN distance is no score); None when there is none."""
    values = [v for v in values if _finite(v)]
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _versus(row: dict[str, float], base: dict[str, float]) -> tuple[float, bool]:
    """(mean difference to the baseline, whether it is beyond the spread: the seed ranges do not overlap; with one
    seed on either side there is no spread to be beyond)."""
    apart = row["max"] < base["min"] or row["min"] > base["max"]
    return row["mean"] - base["mean"], apart and min(row["n"], base["n"]) > 1


def _describe(p: Params, row: str, root: Path) -> dict[str, Any]:
    cfg = run_params(p, row, root)[0].train
    augment = "ada" if cfg.ada.enabled else ("diffaugment" if cfg.diffaugment else "none")
    return {"pretrained": p.transfer.pretrained(row), "freeze_d": cfg.freeze_d, "augment": augment}


def noise_floor(p: Params, root: Path, seed: int = 0) -> dict[str, float]:
    """Frechet distance between two disjoint random halves of the target's real features (refstats), per
    extractor: distances between models closer than this are not resolved by the metric."""
    from facegan.evaluate.fid import feature_stats, frechet_distance, load_stats

    out = {}
    for name in EXTRACTORS:
        path = Layout(root, p.transfer.target).stats / f"{name}.npz"
        if not path.is_file():
            continue
        feats = load_stats(path).features
        perm = np.random.default_rng(seed).permutation(len(feats))
        a, b = (feature_stats(feats[half], warn_small=False) for half in np.array_split(perm, 2))
        out[name] = round(frechet_distance(a.mu, a.sigma, b.mu, b.sigma), 6)
    return out


def summarize(p: Params, root: Path) -> dict[str, Any]:
    """The study's result: per row the spread of its runs' distances and curves (see the module docstring); a
    distance some seeds lack is spread over those that have it (its n says how many)."""
    t = p.transfer
    if pretrained_checkpoint(p, root).is_file():  # else each fine-tune from it says it is missing
        check_pretrained(p, root)
    records: dict[str, dict[int, dict]] = {}
    for row, seed in runs(p):
        records.setdefault(row, {})[seed] = run_record(p, row, seed, root)
    all_records = [r for by_seed in records.values() for r in by_seed.values()]
    rows: dict[str, dict[str, Any]] = {}
    for row, by_seed in records.items():
        recs = list(by_seed.values())
        final = {k: s for k in EXTRACTORS if (s := _spread([r["final"][k] for r in recs if k in r["final"]]))}
        points = sorted({k for r in recs for k, _ in r["fd_curve"]})
        at_kimg = {
            f"{k:g}": s
            for k in points
            if all(any(kk == k for kk, _ in r["fd_curve"]) for r in recs)
            and (s := _spread([fd for r in recs for kk, fd in r["fd_curve"] if kk == k]))
        }
        ends = {
            key: _spread([r[key][-1][1] for r in recs]) if all(r[key] for r in recs) else None
            for key in ("rt", "ada_p")
        }
        rows[row] = {
            **_describe(p, row, root),
            "kimg": recs[0]["kimg"],
            "seeds": list(by_seed),
            "final": final,
            "at_kimg": at_kimg,
            "rt_end": ends["rt"],
            "ada_p_end": ends["ada_p"],
            "curves": {s: {k: r[k] for k in ("fd_curve", "rt", "ada_p")} for s, r in by_seed.items()},
        }
    # the row the others are compared with: `baseline`, else the first; not with itself (no score)
    baseline = "baseline" if "baseline" in rows else next(iter(rows))
    base = rows[baseline]["final"]
    for name, r in rows.items():  # the difference to the baseline, and whether the seed ranges do not overlap
        r["vs_baseline"] = {k: _versus(v, base[k]) for k, v in r["final"].items() if k in base and name != baseline}
    src = Layout(root, t.source, PRETRAIN).evaluation / "metrics.json"
    source = read_json(src, "an evaluation's metrics") if src.is_file() else {}
    if source:
        _check_scored(run_params(p, PRETRAIN, root)[0], source, src, "pretrain it again: `facegan transfer pretrain`")
    # the in-training curve's extractor (train.fid_extractor; None: the runs differ), where there is a curve
    curves = {r.get("curve_extractor") for r in all_records if r["fd_curve"]}
    return {
        "source": t.source,
        "target": t.target,
        **({"curve_extractor": curves.pop() if len(curves) == 1 else None} if curves else {}),
        "target_images": _target_images(p, root),
        "seeds": t.seeds,
        "baseline": baseline,
        "source_model": {k: v for k in EXTRACTORS if _finite(v := source.get(f"fd_{k}"))},
        "noise_floor": noise_floor(p, root),
        "rows": rows,
    }


def _target_images(p: Params, root: Path) -> int | None:
    """How many target images the fine-tunes trained on when transfer.target_images caps them: the packed set's
    size where it holds fewer (training takes all of it then; the header said the config's number). None: all."""
    n = p.transfer.target_images
    packed = Layout(root, p.transfer.target).packed / ZIP_NAME
    if n is None or not packed.is_file():
        return n
    with open_packed(packed) as zf:
        return min(n, len(image_names(zf)))


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def markdown(result: dict[str, Any]) -> str:
    """The table a reader needs: rows by final distance of the first extractor, with spread and context."""
    if result.get("enabled") is False:
        return OFF
    rows = result["rows"]
    names = [k for k in EXTRACTORS if any(k in r["final"] for r in rows.values())]
    first = names[0] if names else None
    order = sorted(rows, key=lambda r: rows[r]["final"][first]["mean"] if first in rows[r]["final"] else math.inf)
    kimgs = sorted({k for r in rows.values() for k in r["at_kimg"]}, key=float)
    n = len(result["seeds"])
    base = result.get("baseline", "baseline")  # tables written before it was named compared with `baseline`
    lines = [
        f"Transfer {result['source']} -> {result['target']}"
        + (f" ({result['target_images']} target images)" if result["target_images"] else "")
        + f", {n} seed{'s' * (n > 1)} per row; Frechet distances, lower is better.",
        "",
        "Source model: " + (", ".join(f"fd_{k} {_fmt(v)}" for k, v in result["source_model"].items()) or "n/a")
        + ". Noise floor (two halves of the real target set): "
        + (", ".join(f"fd_{k} {_fmt(v)}" for k, v in result["noise_floor"].items()) or "n/a") + ".",
        "",
    ]  # fmt: skip
    head = ["row", "from", "freeze_d", "augment", "kimg"]
    for k in names:
        head += [f"fd_{k} (mean ± std)" if n > 1 else f"fd_{k}", "range", f"vs {base}"]
    curve = result.get("curve_extractor", first)  # tables written before it was recorded labelled it so
    head += [f"fd_{curve} @ {k} kimg" if curve else f"fd @ {k} kimg" for k in kimgs] + ["r_t end", "ADA p end"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        r = rows[name]
        cells = [
            name,
            "pretrained" if r["pretrained"] else "scratch",
            str(r["freeze_d"]),
            r["augment"],
            _fmt(r["kimg"]),
        ]
        for k in names:
            f = r["final"].get(k)
            if f is None:
                cells += ["-", "-", "-"]
                continue
            diff, clear = r["vs_baseline"].get(k, (None, False))
            seeds = f"{f['n']} of {n} seeds" if f["n"] < n else "1 seed" if f["n"] == 1 else ""
            cells += [
                _fmt(f["mean"]) + (f" ± {_fmt(f['std'], 2)}" if f["n"] > 1 else "") + (f" ({seeds})" if seeds else ""),
                f"{_fmt(f['min'])}–{_fmt(f['max'])}" if f["n"] > 1 else "-",
                "-" if name == base or diff is None else f"{diff:+.3g}" + (" (beyond spread)" if clear else ""),
            ]
        cells += [_fmt(r["at_kimg"][k]["mean"]) if k in r["at_kimg"] else "-" for k in kimgs]
        cells += [_fmt(r[e]["mean"], 3) if r[e] else "-" for e in ("rt_end", "ada_p_end")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves_csv(result: dict[str, Any]) -> str:
    """Long format: row, seed, curve (fd / r_t / ada_p), kimg, value."""
    out = ["row,seed,curve,kimg,value"]
    for name, r in result["rows"].items():
        for seed, c in r["curves"].items():
            for curve, key in (("fd", "fd_curve"), ("r_t", "rt"), ("ada_p", "ada_p")):
                out += [f"{name},{seed},{curve},{k:g},{v:.6g}" for k, v in c[key]]
    return "\n".join(out) + "\n"


def _band(ax, rows: dict[str, dict], key: str) -> bool:
    """One line per row (mean over seeds) with the seeds' min-max shaded; False when no row has the curve."""
    drawn = False
    for name, r in rows.items():
        series = [c[key] for c in r["curves"].values() if c[key]]
        if not series:
            continue
        xs = sorted({k for s in series for k, _ in s})
        vals = [[dict(s).get(x) for s in series] for x in xs]
        keep = [(x, [v for v in vs if v is not None]) for x, vs in zip(xs, vals, strict=True)]
        keep = [(x, vs) for x, vs in keep if vs]
        x = [k for k, _ in keep]
        (line,) = ax.plot(x, [statistics.fmean(v) for _, v in keep], marker="o" if len(x) < 4 else None, label=name)
        ax.fill_between(x, [min(v) for _, v in keep], [max(v) for _, v in keep], color=line.get_color(), alpha=0.2)
        drawn = True
    return drawn


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    """fid_vs_kimg.png (in-training distance, or the final one when there is no curve) and overfitting.png
    (r_t and ADA's p over kimg): one line per row, the seeds' spread shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if not _band(ax, rows, "fd_curve"):  # no in-training curve: the final distances at the run's kimg
        first = next((k for k in EXTRACTORS if any(k in r["final"] for r in rows.values())), None)
        for name, r in rows.items():
            if first in r["final"]:
                f = r["final"][first]
                ax.errorbar([r["kimg"]], [f["mean"]], yerr=[[f["mean"] - f["min"]], [f["max"] - f["mean"]]], fmt="o",
                            capsize=4, label=name)  # fmt: skip
    for k, v in result["noise_floor"].items():
        ax.axhline(v, color="gray", linestyle="--", linewidth=1, label=f"noise floor (fd_{k})")
    ax.set(xlabel="kimg", ylabel="Frechet distance (lower is better)", title="Transfer study: distance to the target")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fid_vs_kimg.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _band(axes[0], rows, "rt")
    axes[0].set(xlabel="kimg", ylabel="r_t = E[sign D(real)]", title="D's overfitting (1 = every real called real)")
    _band(axes[1], rows, "ada_p")
    axes[1].set(xlabel="kimg", ylabel="p", title="ADA augmentation probability")
    for a in axes:
        if a.lines:
            a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "overfitting.png", dpi=100)
    plt.close(fig)
    return [out / "fid_vs_kimg.png", out / "overfitting.png"]


def table(params: Params | Path | str = "params.yaml", root: Path | str = ".") -> dict[str, Any]:
    """data/transfer/: fid_table.json (DVC metrics), fid_table.md, curves.csv, fid_vs_kimg.png, overfitting.png."""
    p = params if isinstance(params, Params) else load_params(params)
    root = Path(root)
    if not p.transfer.enabled:
        return _disabled(root)
    result = summarize(p, root)
    with atomic_dir(root / TABLE_DIR) as tmp:
        write_text(tmp / "fid_table.json", json.dumps({k: v for k, v in result.items()}, indent=1))
        write_text(tmp / "fid_table.md", markdown(result))
        write_text(tmp / "curves.csv", curves_csv(result))
        plots(result, tmp)
    log.info("transfer study:\n%s", markdown(result))
    _track(p, root, result)
    return result


def _disabled(root: Path) -> dict[str, Any]:
    """With transfer.enabled false: the stage's outputs say the study is off (DVC needs them to run the rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log.warning("%s", OFF.strip())
    result = {"enabled": False}
    with atomic_dir(root / TABLE_DIR) as tmp:
        write_text(tmp / "fid_table.json", json.dumps(result, indent=1))
        write_text(tmp / "fid_table.md", OFF)
        write_text(tmp / "curves.csv", curves_csv({"rows": {}}))
        for name in ("fid_vs_kimg.png", "overfitting.png"):
            fig = plt.figure(figsize=(6, 1))
            fig.text(0.5, 0.5, "transfer study off (transfer.enabled: false)", ha="center", va="center")
            fig.savefig(tmp / name, dpi=100)
            plt.close(fig)
    return result


def _track(p: Params, root: Path, result: dict[str, Any]) -> None:
    """The table as the study's last stage run, one child run per row (its config and spread: the MLflow UI
    compares rows), all under the study's parent, which it finishes."""
    from facegan import track
    from facegan.config import flatten

    if not p.tracking.enabled:
        return
    t = track.stage_tracker(p.tracking, "transfer-table", p.transfer.target, p, root, parent="transfer")
    metrics: dict[str, float] = {}
    for name, r in result["rows"].items():
        row_metrics = {f"fd_{k}_{s}": v[s] for k, v in r["final"].items() for s in ("mean", "std", "min", "max")}
        row_metrics |= {f"fd_{k}": v["mean"] for k, v in r["final"].items()}
        row_metrics |= {f"at_kimg_{k}.fd_mean": v["mean"] for k, v in r["at_kimg"].items()}
        for end in ("rt_end", "ada_p_end"):
            if r[end]:
                row_metrics[f"{end}_mean"] = r[end]["mean"]
        cfg = run_params(p, name, root)[0].train
        child = track.Tracker.open(
            p.tracking,
            t.folder,
            f"row-{name}",
            track.run_spec(
                p.tracking,
                {"mlflow.runName": f"row {name}", track.KIND: "row", "stage": "transfer-row", "variant": name,
                 "dataset": p.transfer.target},
                {**flatten(cfg, "train."), "seeds": ",".join(map(str, r["seeds"])), "pretrained": r["pretrained"]},
                t.parent_spec,
            ),
        )  # fmt: skip
        child.log_metrics({track.metric_key(k): v for k, v in row_metrics.items()})
        child.end()
        metrics |= {track.metric_key(f"{name}.{k}"): v for k, v in row_metrics.items()}
    metrics |= {track.metric_key(f"noise_floor.fd_{k}"): v for k, v in result["noise_floor"].items()}
    metrics |= {track.metric_key(f"source_model.fd_{k}"): v for k, v in result["source_model"].items()}
    names = ("fid_table.md", "fid_table.json", "curves.csv", "fid_vs_kimg.png", "overfitting.png")
    files = [root / TABLE_DIR / n for n in names]
    t.log_metrics(metrics)
    for path in files:
        t.log_artifact(path)
    t.end()
    track.finish_pipeline(p.tracking, t.parent_spec, "transfer", metrics, files, t.folder, None, {})
