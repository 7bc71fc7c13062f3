"""The FID comparison table across MLflow runs: rows = pipeline runs, columns = settings and scores."""

from __future__ import annotations

import csv
import io
from pathlib import Path

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
    "steps",
    "wall_s",
]


def rows_of(runs: list) -> list[dict[str, object]]:
    """One row per MLflow run (objects with .info, .data.tags/.metrics/.params)."""
    out = []
    for r in runs:
        tags, m, p = r.data.tags, r.data.metrics, r.data.params
        wall = (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time and r.info.start_time else None
        out.append(
            {
                "run": r.info.run_id[:8],
                "dataset": tags.get("dataset", ""),
                "model": tags.get("model", ""),
                "loss": tags.get("loss", ""),
                "d_variant": tags.get("d_variant", ""),
                "augment": tags.get("augment", ""),
                "freeze_d": p.get("train.freeze_d", "-"),
                **{k: m.get(k) for k in ("fd_inception", "fd_dlib", "kid_inception", "kid_dlib", "attr_acc_mean")},
                "steps": int(m["training.steps"]) if "training.steps" in m else tags.get("steps", ""),
                "wall_s": round(wall, 1) if wall is not None else None,
            }
        )
    return out


def _fmt(v: object) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def bar_chart(rows: list[dict], path: Path, metric: str) -> None:
    """Horizontal bars of `metric` per run (lower is better), best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have = sorted((r for r in rows if r[metric] is not None), key=lambda r: r[metric])
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(have) + 1.2))
    labels = [f"{r['dataset']} {r['model']} {r['loss']} {r['d_variant']} {r['augment']} ({r['run']})" for r in have]
    ax.barh(labels[::-1], [r[metric] for r in have][::-1], color="#4a7ab8")
    ax.set_xlabel(f"{metric} (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def primary_metric(rows: list[dict]) -> str:
    return "fd_inception" if any(r["fd_inception"] is not None for r in rows) else "fd_dlib"


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="FID comparison (lower is better)")
    for c in COLUMNS:
        t.add_column(c, justify="right" if c.startswith(("fd_", "kid_", "attr", "steps", "wall")) else "left")
    for r in rows:
        t.add_row(*(_fmt(r[c]) for c in COLUMNS))
    Console().print(t)


def write_table(rows: list[dict], out: Path) -> list[Path]:
    """fid_table.md, fid_table.csv and fid_table.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "fid_table.md").write_text(to_markdown(rows), encoding="utf-8")
    (out / "fid_table.csv").write_text(to_csv(rows), encoding="utf-8")
    bar_chart(rows, out / "fid_table.png", primary_metric(rows))
    return [out / "fid_table.md", out / "fid_table.csv", out / "fid_table.png"]
