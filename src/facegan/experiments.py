"""Tables over DVC experiments: one metric pivoted by two params (the shape of ablation tables)."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

from facegan.errors import StageError


def dvc_experiments(root: Path = Path(".")) -> list[dict[str, str]]:
    """Rows of `dvc exp show --csv` (workspace, baseline and every experiment)."""
    r = subprocess.run(["dvc", "exp", "show", "--csv", "--all-commits"], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise StageError(f"dvc exp show failed: {r.stderr.strip()}")
    return list(csv.DictReader(io.StringIO(r.stdout)))


def column(row: dict[str, str], name: str) -> str | None:
    """A value by param/metric name; DVC prefixes 'file:' to names that clash, accept either form."""
    if name in row:
        return row[name]
    hits = [v for k, v in row.items() if k.endswith(":" + name)]
    return hits[0] if hits else None


def pivot(rows: list[dict[str, str]], row_param: str, col_param: str, metric: str) -> tuple[list[str], list[str], dict]:
    """(row keys, col keys, {(r, c): metric}) over experiment rows; later rows win on duplicates."""
    cells: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.get("typ") == "baseline" or not row.get("Experiment"):
            continue
        if row.get("State") and row["State"] != "Success":
            continue  # queued/running experiments echo the workspace's metrics; failed ones have none
        r, c, v = column(row, row_param), column(row, col_param), column(row, metric)
        if r and c and v:
            cells[(r, c)] = v
    rkeys = sorted({k[0] for k in cells})
    ckeys = sorted({k[1] for k in cells})
    return rkeys, ckeys, cells


def to_markdown(rkeys: list[str], ckeys: list[str], cells: dict, row_param: str, col_param: str, metric: str) -> str:
    head = f"| {metric} ({row_param} \\ {col_param}) | " + " | ".join(ckeys) + " |"
    sep = "|---" * (len(ckeys) + 1) + "|"
    body = ["| " + r + " | " + " | ".join(_fmt(cells.get((r, c))) for c in ckeys) + " |" for r in rkeys]
    return "\n".join([head, sep, *body]) + "\n"


def _fmt(v: str | None) -> str:
    if not v:
        return "-"
    try:
        return f"{float(v):.4f}"
    except ValueError:
        return v
