"""The FID comparison table across MLflow runs: rows = runs (pipelines, transfer runs, CycleGAN directions),
columns = settings and scores; written in full to md/csv, printed for people to fit the terminal."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# how a row was scored: distances of different Inception resizes (evaluate.mode), real subsets (evaluate.max_real)
# or packed sets (data: the first 8 hex of its sha256, recorded by pipeline runs) are not ranked together
SCORING = ("mode", "max_real", "data")
# the columns of a pipeline run's row (the explorer's compare table shows these)
COLUMNS = [
    "run",
    "dataset",
    "model",
    "loss",
    "d_variant",
    "augment",
    "freeze_d",
    "fd_inception",
    "fd_dlib",
    "kid_inception",
    "kid_dlib",
    "attr_acc_mean",
    "samples",
    "steps",
    "wall_s",
    *SCORING,
]
# every column: the files and `facegan report --wide` (kind: pipeline | transfer | cyclegan)
ALL_COLUMNS = [*COLUMNS, "kind", "variant"]
METRICS = ("fd_inception", "fd_dlib", "kid_inception", "kid_dlib", "attr_acc_mean")
SEED_SUFFIX = re.compile(r"-s\d+$")  # transfer variants <row>-s<seed>


def wall_seconds(run: Any) -> float | None:
    """end_time - start_time of an MLflow run, in seconds (None while it has no end)."""
    start, end = run.info.start_time, run.info.end_time
    return (end - start) / 1000 if start and end else None


def _summed(runs: list) -> float | None:
    """The runs' walls added up (those with one), None when none has one."""
    walls = [w for w in map(wall_seconds, runs) if w is not None]
    return sum(walls) if walls else None


def _score(v: object) -> float | None:
    """A metric value, None when unscored: missing or not finite (a NaN distance is no score)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def rows_of(runs: list, stages: dict[str, list] | None = None) -> list[dict[str, Any]]:
    """One row per pipeline (parent) MLflow run (objects with .info, .data.tags/.metrics/.params); its time the sum
    of its stage runs' (`stages`: run id -> those runs, as for transfer rows), else the parent's own span."""
    out = []
    for r in runs:
        tags, m, p = r.data.tags, r.data.metrics, r.data.params
        wall = _summed((stages or {}).get(r.info.run_id) or []) or wall_seconds(r)
        out.append(
            {
                "run": r.info.run_id[:8],
                "dataset": tags.get("dataset", ""),
                "model": tags.get("model", ""),
                "loss": tags.get("loss", ""),
                "d_variant": tags.get("d_variant", ""),
                # from the logged train params where there are some: runs tagged before ADA was named say "none"
                "augment": (
                    augment_label(p["train.ada.enabled"], p.get("train.diffaugment"))
                    if "train.ada.enabled" in p
                    else tags.get("augment", "")
                ),
                "freeze_d": p.get("train.freeze_d", "-"),
                **{k: _score(m.get(k)) for k in METRICS},
                "samples": _count(p.get("evaluate.num_samples")),
                "steps": int(m["training.steps"]) if "training.steps" in m else tags.get("steps", ""),
                "wall_s": round(wall, 1) if wall is not None else None,
                "kind": "pipeline",
                "variant": "",
                **_scoring(p, tags.get("dataset_sha256", "")),
            }
        )
    return out


def _scoring(params: dict, dataset_sha256: str = "") -> dict[str, str]:
    """The SCORING columns from a run's logged params (and the packed set's hash where the run records it)."""
    return {
        "mode": params.get("evaluate.mode", ""),
        "max_real": params.get("evaluate.max_real", ""),
        "data": dataset_sha256[:8],
    }


def augment_label(ada: object, diffaugment: object) -> str:
    """'ada', the DiffAugment policies ('color,translation') or 'none': the one spelling of every table and of the
    pipeline runs' tag, from the config (a bool, a list) or from params logged as strings ('True', "['color']")."""
    if ada is True or ada == "True":
        return "ada"
    policies = diffaugment if isinstance(diffaugment, list) else re.findall(r"[A-Za-z_]+", str(diffaugment or ""))
    return ",".join(policies) or "none"


def _latest(runs: list) -> dict[str, Any]:
    """Stage name -> its run among `runs` (newest first): the newest FINISHED one, else the newest (a stage that
    failed and was retried shows the retry, not the failed attempt)."""
    out: dict[str, Any] = {}
    for r in runs:
        stage = r.data.tags.get("stage")
        if stage not in out or (out[stage].info.status != "FINISHED" and r.info.status == "FINISHED"):
            out[stage] = r
    return out


def _count(value: object) -> int | None:
    """A sample count from a logged param or metric ('500', 500.0), None when not recorded."""
    n = _steps(value)
    return n if isinstance(n, int) else None


def _steps(value: object) -> int | str:
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value or "")
    return int(text) if text.isdigit() else text


def transfer_rows(parent: Any, children: list) -> list[dict[str, Any]]:
    """One row per run of the transfer story (variant `pretrain`, fine-tunes `<row>[-s<seed>]`): scores from its
    evaluate run (else what transfer-table put on the parent), settings from the row's summary run (`train.*`
    params, kind "row") or the parent's `transfer.*` params."""
    p, pm = parent.data.params, parent.data.metrics
    n_transfer = p.get("transfer.num_samples")  # null: evaluate.num_samples
    by_variant: dict[str, list] = {}
    summaries: dict[str, dict] = {}  # row name -> params of its summary run (the resolved train config)
    for r in children:
        v = r.data.tags.get("variant")
        if r.data.tags.get("facegan.kind", "stage") != "stage":
            summaries[v or ""] = r.data.params
        elif v:
            by_variant.setdefault(v, []).append(r)
    out = []
    for variant, runs in by_variant.items():
        pre = variant == "pretrain"
        row_name = SEED_SUFFIX.sub("", variant) if "transfer.seeds" in p else variant

        def cfg(key: str, pre: bool = pre, row_name: str = row_name) -> str | None:
            if not pre and f"train.{key}" in summaries.get(row_name, {}):
                return summaries[row_name][f"train.{key}"]
            base = p.get(f"transfer.{'pretrain' if pre else 'finetune'}.{key}")
            return base if pre else p.get(f"transfer.runs.{row_name}.{key}", base)

        stage = _latest(runs)
        ev, train = stage.get("evaluate"), stage.get("train")
        m = ev.data.metrics if ev else {}
        wall = _summed(list(stage.values()))
        out.append(
            {
                "run": (ev or train or runs[0]).info.run_id[:8],
                "dataset": runs[0].data.tags.get("dataset") or parent.data.tags.get("source" if pre else "target", ""),
                "model": cfg("model") or "stylegan2",
                "loss": cfg("loss") or "",
                "d_variant": cfg("d_variant") or "",
                "augment": augment_label(cfg("ada.enabled"), cfg("diffaugment")),
                "freeze_d": cfg("freeze_d") or "-",
                **{k: _score(m.get(k, pm.get(f"{variant}.{k}"))) for k in METRICS},
                "samples": _count(n_transfer if n_transfer not in (None, "None") else p.get("evaluate.num_samples")),
                "steps": _steps(cfg("steps")),
                "wall_s": round(wall, 1) if wall is not None else None,
                "kind": "transfer",
                "variant": variant,
                **_scoring(p),
            }
        )
    return out


def cyclegan_rows(run: Any) -> list[dict[str, Any]]:
    """One row per direction of the CycleGAN run (metrics `a_to_b.fd_dlib`, ...), under its target dataset."""
    tags, m, p = run.data.tags, run.data.metrics, run.data.params
    a, b = tags.get("a") or p.get("cyclegan.a", "a"), tags.get("b") or p.get("cyclegan.b", "b")
    wall = wall_seconds(run)
    out = []
    for direction, (src, dst) in (("a_to_b", (a, b)), ("b_to_a", (b, a))):
        out.append(
            {
                "run": run.info.run_id[:8],
                "dataset": dst,
                "model": "cyclegan",
                "loss": p.get("cyclegan.loss", ""),
                "d_variant": "sn" if p.get("cyclegan.spectral_norm") == "True" else "plain",
                "augment": augment_label(None, p.get("cyclegan.diffaugment")),
                "freeze_d": "-",
                **{k: _score(m.get(f"{direction}.{k}")) for k in METRICS},
                "samples": _count(m.get(f"num_samples.{direction}", p.get("cyclegan.num_samples"))),
                "steps": _steps(p.get("cyclegan.steps", "")),
                "wall_s": round(wall, 1) if wall is not None else None,
                "kind": "cyclegan",
                "variant": f"{src}->{dst}",
                **_scoring(p),
            }
        )
    return out


def primary_metric(rows: list[dict]) -> str:
    return "fd_inception" if any(r.get("fd_inception") is not None for r in rows) else "fd_dlib"


def groups(rows: list[dict]) -> list[tuple]:
    """Per row, what it is ranked within: its dataset, how it was scored (SCORING; the mode, Inception's resize, only
    where the table ranks by Inception's distance) and the number of generated images scored (fewer samples bias a
    Frechet distance upward). Rows without the packed set's hash (transfer and CycleGAN rows) rank with their
    dataset's other rows unless those record more than one set (data changed)."""
    inception = primary_metric(rows) == "fd_inception"
    sets: dict[str, set[str]] = {}
    for r in rows:
        if r.get("data"):
            sets.setdefault(r.get("dataset", ""), set()).add(r["data"])
    out = []
    for r in rows:
        data = r.get("data", "") if len(sets.get(r.get("dataset", ""), ())) > 1 else ""
        n = r.get("samples")
        mode = str(r.get("mode", "")) if inception else ""
        out.append((r.get("dataset", ""), data, mode, str(r.get("max_real", "")), n is None, -(n or 0)))
    return out


def ordered(rows: list[dict]) -> list[dict]:
    """Grouped by dataset (by name), then by how they were scored and the number of generated images scored (most
    first): only rows of one group (`groups`) are ranked against each other, best first: the primary metric, then
    fd_dlib; unscored (None: the row builders turn NaN into None) last."""
    metric = primary_metric(rows)

    def key(pair: tuple) -> tuple:
        r, group = pair
        a, b = r.get(metric), r.get("fd_dlib")
        return (*group, a is None, a or 0.0, b is None, b or 0.0)

    return [r for r, _ in sorted(zip(rows, groups(rows), strict=True), key=key)]


# ---- files: every column, full precision ----------------------------------------------------------


def _plain(v: object) -> str:
    """A value as it is (a float in full: the shortest text that reads back the same), '-' when empty."""
    return "-" if v is None or v == "" else str(v)


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(ALL_COLUMNS) + " |", "|" + "---|" * len(ALL_COLUMNS)]
    lines += ["| " + " | ".join(_plain(r.get(c)) for c in ALL_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, ALL_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r[k]) for k in ALL_COLUMNS} for r in rows)
    return buf.getvalue()


def bar_chart(rows: list[dict], path: Path) -> None:
    """One panel per dataset, scoring and sample count (`groups`: distances to different real sets, or scored
    otherwise, are not comparable, and fewer samples bias a distance upward): horizontal bars of the panel's primary
    metric per run (lower is better), best at the top; its title counts the runs without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[dict]] = {}
    keys = groups(rows)
    # a title says the scoring where the table's groups differ in it (`groups` keeps the mode only where it matters)
    varying = {i: name for i, name in ((2, "mode"), (3, "max_real")) if len({g[i] for g in keys}) > 1}
    for r, g in zip(rows, keys, strict=True):
        n, dataset, data = r.get("samples"), g[0], g[1]
        said = [f"{name} {g[i] or '-'}" for i, name in varying.items()] + ([f"data {data}"] if data else [])
        panels.setdefault(", ".join([dataset, *said, *([f"n = {n}"] if n is not None else [])]), []).append(r)
    heights = [0.4 * len(g) + 0.8 for g in panels.values()]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(8, sum(heights) + 0.4), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, (panel, group) in zip(axes[:, 0], panels.items(), strict=True):
        metric = primary_metric(group)
        have = sorted((r for r in group if r.get(metric) is not None), key=lambda r: r[metric])
        parts = ("model", "variant", "loss", "d_variant", "augment")
        labels = [" ".join([*(str(r[k]) for k in parts if r.get(k)), f"({r['run']})"]) for r in have]
        ax.barh(labels[::-1], [r[metric] for r in have][::-1], color="#4a7ab8")
        missing = len(group) - len(have)
        ax.set_title(
            f"{panel}: {metric} (lower is better)" + (f"; {missing} run(s) without it not shown" if missing else ""),
            loc="left",
            fontsize=9,
        )
    fig.tight_layout()
    from facegan.io import atomic_file

    try:
        with atomic_file(path) as tmp:  # whole or not at all, as every output
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)


def write_table(rows: list[dict], out: Path) -> list[Path]:
    """fid_table.md, fid_table.csv and fid_table.png in `out`, each written atomically."""
    from facegan.io import write_text

    write_text(out / "fid_table.md", to_markdown(rows))
    write_text(out / "fid_table.csv", to_csv(rows))
    bar_chart(rows, out / "fid_table.png")
    return [out / "fid_table.md", out / "fid_table.csv", out / "fid_table.png"]


# ---- the terminal: numbers for people, only what fits ---------------------------------------------


def human_seconds(s: float | None) -> str:
    """41s, 12m 01s, 1h 02m (3.2s under ten seconds)."""
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.1f}s"
    n = round(s)
    if n < 3600:
        return f"{n // 60}m {n % 60:02d}s" if n >= 60 else f"{n}s"
    return f"{n // 3600}h {n % 3600 // 60:02d}m"


def _sig(v: object) -> str:
    """FD/KID with 4 significant digits (no exponent above 1e4)."""
    if not isinstance(v, (int, float)):
        return _plain(v)
    return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _pct(v: object) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) else _plain(v)


# terminal order: (key, header, formatter, right-aligned)
VIEW: list[tuple[str, str, Callable[[Any], str], bool]] = [
    ("dataset", "dataset", _plain, False),
    ("model", "model", _plain, False),
    ("variant", "variant", _plain, False),
    ("loss", "loss", _plain, False),
    ("d_variant", "D", _plain, False),
    ("augment", "augment", _plain, False),
    ("freeze_d", "freeze_d", _plain, True),
    ("fd_inception", "FD incep", _sig, True),
    ("fd_dlib", "FD dlib", _sig, True),
    ("kid_inception", "KID incep", _sig, True),
    ("kid_dlib", "KID dlib", _sig, True),
    ("attr_acc_mean", "attr acc", _pct, True),
    ("samples", "n", _plain, True),
    ("mode", "mode", _plain, False),
    ("max_real", "max real", _plain, True),
    ("data", "data", _plain, False),
    ("steps", "steps", _plain, True),
    ("wall_s", "time", human_seconds, True),
    ("run", "run", _plain, False),
    ("kind", "kind", _plain, False),
]
LABELS = {k: label for k, label, _, _ in VIEW}
# hidden first when the table is too wide (constant columns before varying ones); never hidden: dataset, model,
# the primary metric
DROP_ORDER = [
    "mode",
    "max_real",
    "data",
    "run",
    "freeze_d",
    "d_variant",
    "loss",
    "augment",
    "kid_inception",
    "attr_acc_mean",
    "steps",
    "kid_dlib",
    "fd_dlib",
    "fd_inception",
    "wall_s",
    "variant",
    "samples",  # last: the ranking is within one count
]


def _cell(key: str, v: object) -> str:
    return next(f for k, _, f, _ in VIEW if k == key)(v)


def _table(rows: list[dict], keys: list[str], title: str):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for key in keys:
        right = next(r for k, _, _, r in VIEW if k == key)
        t.add_column(LABELS[key], justify="right" if right else "left", overflow="fold")
    for i, r in enumerate(rows):
        first = i == 0 or rows[i - 1].get("dataset") != r.get("dataset")
        last = i < len(rows) - 1 and rows[i + 1].get("dataset") != r.get("dataset")
        cells = [Text(_cell(k, r.get(k)) if k != "dataset" or first else "") for k in keys]
        t.add_row(*cells, end_section=last)  # a blank line between datasets
    return t


def render(rows: list[dict], width: int = 80, wide: bool = False):
    """(rich Table, notes) of `rows` (ordered): every column when `wide`; else columns empty in every row are
    dropped and then the least useful ones until the table fits `width` (the notes say which, and the value of
    those that are the same in every row)."""
    from rich.console import Console

    metric = primary_metric(rows)
    title = f"FID comparison: {LABELS[metric]}, lower is better"
    keys = [k for k, *_ in VIEW]
    if wide:
        return _table(rows, keys, title), []
    # kind is said by model + variant; columns empty in every row say nothing
    keys = [k for k in keys if k != "kind" and any(_plain(r.get(k)) != "-" for r in rows)]
    constant = {k for k in keys if len({_cell(k, r.get(k)) for r in rows}) == 1}
    candidates = [k for k in DROP_ORDER if k in constant] + [k for k in DROP_ORDER if k not in constant]
    candidates = [k for k in candidates if k in keys and k != metric and (k != "variant" or k in constant)]
    probe = Console(width=10_000, file=io.StringIO())
    dropped: list[str] = []
    while probe.measure(_table(rows, keys, title)).maximum > width and candidates:
        k = candidates.pop(0)
        keys.remove(k)
        dropped.append(k)
    same = [f"{LABELS[k]} {_cell(k, rows[0].get(k))}" for k in dropped if k in constant]
    hidden = [LABELS[k] for k in dropped if k not in constant]
    notes = [f"every row: {', '.join(same)}"] if same else []
    if hidden:
        notes.append(f"hidden to fit {width} columns: {', '.join(hidden)} (--wide shows every column)")
    return _table(rows, keys, title), notes


def print_table(rows: list[dict], wide: bool = False, console: Any = None) -> None:
    """The table on the terminal (`console`: a rich Console, default stdout): fits its width unless `wide`."""
    from rich.console import Console

    con = console or Console()
    table, notes = render(rows, con.width, wide)
    if wide and console is None:  # every value whole: the terminal wraps lines instead of rich cutting cells
        con = Console(width=max(con.width, Console(width=10_000, file=io.StringIO()).measure(table).maximum))
    con.print(table)
    for note in notes:
        con.print(note, highlight=False, markup=False)
