"""Tables over DVC experiments: one metric pivoted by two params (the shape of ablation tables)."""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
import sys
from pathlib import Path

from facegan.errors import StageError


def dvc_experiments(root: Path = Path(".")) -> list[dict[str, str]]:
    """Rows of `dvc exp show --csv` (workspace, baseline and every experiment)."""
    # this interpreter's dvc: the console script need not be on PATH (a venv's facegan run without activating it);
    # -P: the project folder is not put first on the module path (a file there must not shadow dvc's imports)
    cmd = [sys.executable, "-P", "-m", "dvc", "exp", "show", "--csv", "--all-commits"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise StageError(f"dvc exp show failed: {r.stderr.strip()}")
    return list(csv.DictReader(io.StringIO(r.stdout)))


def column(row: dict[str, str], name: str) -> str | None:
    """A value by param/metric name; DVC prefixes 'file:' to names that clash, accept either form."""
    if name in row:
        return row[name]
    hits = [v for k, v in row.items() if k.endswith(":" + name)]
    return hits[0] if hits else None


def pivot(
    rows: list[dict[str, str]], row_param: str, col_param: str, metric: str
) -> tuple[list[str], list[str], dict[tuple[str, str], list[float]]]:
    """(row keys, col keys, {(r, c): the metric of every finished experiment in that cell}) over experiment
    rows: several seeds of one cell give several values."""
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row.get("typ") == "baseline" or not row.get("Experiment"):
            continue
        if row.get("State") and row["State"] != "Success":
            continue  # queued/running experiments echo the workspace's metrics; failed ones have none
        r, c, v = column(row, row_param), column(row, col_param), column(row, metric)
        if r and c and v:
            try:
                cells.setdefault((r, c), []).append(float(v))
            except ValueError:
                continue
    rkeys = sorted({k[0] for k in cells})
    ckeys = sorted({k[1] for k in cells})
    return rkeys, ckeys, cells


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def to_markdown(
    rkeys: list[str], ckeys: list[str], cells: dict, row_param: str, col_param: str, metric: str, lower: bool = True
) -> str:
    """The pivot as Markdown, mean +- std (n) per cell, then the best cell and the cells whose range of values
    overlaps the best's (differences that do not exceed the seed-to-seed spread)."""
    head = f"| {metric} ({row_param} \\ {col_param}) | " + " | ".join(ckeys) + " |"
    sep = "|---" * (len(ckeys) + 1) + "|"
    body = ["| " + r + " | " + " | ".join(_fmt(cells.get((r, c))) for c in ckeys) + " |" for r in rkeys]
    lines = [head, sep, *body]
    if cells:
        best = (min if lower else max)(cells, key=lambda k: spread(cells[k])[0])
        lo, hi = min(cells[best]), max(cells[best])
        tied = [k for k in cells if k != best and min(cells[k]) <= hi and max(cells[k]) >= lo]
        lines += [
            "",
            f"Best ({'lowest' if lower else 'highest'} mean): {best[0]} / {best[1]}. "
            + (
                "Within its spread (value ranges overlap): " + ", ".join(f"{r} / {c}" for r, c in sorted(tied)) + "."
                if tied
                else "Every other cell's range is clear of it."
            ),
        ]
    return "\n".join(lines) + "\n"


def _fmt(values: list[float] | None) -> str:
    if not values:
        return "-"
    mean, std = spread(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {std:.4f} (n={len(values)})"


def _literal(v: object) -> str:
    """A value in the override grammar `dvc exp run -S` reads (Hydra's): lists in brackets, plain words bare,
    other strings quoted (a bare comma would make a sweep)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(_literal(x) for x in v) + "]"
    s = str(v)
    return s if s.replace("_", "").replace("-", "").replace(".", "").isalnum() else "'" + s.replace("'", "\\'") + "'"


def set_args(overlay_path: Path, params_path: Path = Path("params.yaml")) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` from a YAML overlay of params.yaml (every leaf), after checking
    that params.yaml with the overlay applied is valid (a typo fails here, not hours into the experiment)."""
    from facegan.config import ParamsError, flatten, load_params, read_yaml

    overlay = read_yaml(overlay_path)
    if not isinstance(overlay, dict):
        raise ParamsError(f"{overlay_path}: expected a mapping of params.yaml sections")
    leaves = flatten(overlay)
    load_params(params_path, leaves)
    present = flatten(read_yaml(params_path))
    # a key params.yaml does not spell out (a default of its section) is added, `+key=value` in DVC's (Hydra's)
    # override syntax: a plain `key=value` for it stops `dvc exp run` with "Key ... is not in struct"
    return [arg for k, v in leaves.items() for arg in ("-S", f"{'' if k in present else '+'}{k}={_literal(v)}")]
