"""Tables over DVC experiments: one metric pivoted by two params (the shape of ablation tables)."""

from __future__ import annotations

import csv
import io
import math
import statistics
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from facegan.errors import FaceganError, StageError

COMMIT = "commit"  # put on each experiment row: the rev of its baseline (all_commits lists several)
# sections that say where and how fast runs go, not what they compute: they may differ within a cell
NOT_COMPUTED = ("workers", "orchestration", "tracking")


class TableError(FaceganError, ValueError):
    """A table that cannot be made as asked: a name several columns match, a cell of unlike experiments."""


def dvc_experiments(root: Path = Path("."), all_commits: bool = False) -> list[dict[str, str]]:
    """Rows of `dvc exp show --csv` (workspace, baseline and the experiments of the current commit, or of every
    commit: `all_commits`, which reads the whole history: minutes in a long one), each experiment's with its
    baseline's rev as COMMIT."""
    # this interpreter's dvc: the console script need not be on PATH (a venv's facegan run without activating it);
    # -P: the project folder is not put first on the module path (a file there must not shadow dvc's imports)
    cmd = [sys.executable, "-P", "-m", "dvc", "exp", "show", "--csv", *(["--all-commits"] if all_commits else [])]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise StageError(f"dvc exp show failed: {r.stderr.strip()}")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    base = ""
    for row in rows:  # each baseline row is followed by the experiments of its commit
        if row.get("typ") == "baseline":
            base = row.get("rev", "")
        else:
            row[COMMIT] = base
    return rows


def resolve(rows: list[dict[str, str]], name: str) -> str:
    """The column `name` stands for: itself, else the one `<file>:<name>` (DVC prefixes the file to names that
    clash); several such columns are an error naming them. A `<file>:<name>` DVC did not prefix (no other file
    has the name) is the plain `<name>`."""
    names = dict.fromkeys(k for row in rows for k in row)
    if name in names:
        return name
    if ":" in name and (bare := name.rsplit(":", 1)[1]) in names:
        return bare
    hits = [k for k in names if k.endswith(":" + name)]
    if len(hits) > 1:
        raise TableError(f"{name} is a column of {len(hits)} files: {', '.join(hits)}; pass the one you mean in full")
    return hits[0] if hits else name


def named(rows: list[dict[str, str]], name: str) -> str:
    """`resolve`, for a name the user typed: one that is no column of any row is an error naming the closest
    columns (a misspelt name read as "no experiments have it; run a sweep first"). No rows: the name as it is."""
    import difflib

    found = resolve(rows, name)
    names = {k for row in rows for k in row}
    if found in names or not names:
        return found
    bare = sorted({k.rsplit(":", 1)[-1] for k in names})
    close = difflib.get_close_matches(name.rsplit(":", 1)[-1], bare, n=3, cutoff=0.7)
    hint = f"did you mean {' or '.join(close)}?" if close else "`dvc exp show` lists the names there are"
    raise TableError(
        f"{name}: no param or metric of that name in the DVC experiments (a metric appears once an experiment has "
        f"run the stage that writes it); {hint}"
    )


def column(row: dict[str, str], name: str) -> str | None:
    """A value by param/metric name; DVC prefixes 'file:' to names that clash, accept either form."""
    return row.get(resolve([row], name))


def _order(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order (seed 2 before 10), then words."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _unlike(members: list[dict[str, str]], keys: set[str]) -> dict[str, set[str]]:
    """{column: its values} of the params (and COMMIT) in which the experiments of one cell differ, but `keys`
    (the pivot's) and seeds."""
    from facegan.config import Params

    out = {}
    for name in dict.fromkeys(k for row in members for k in row):
        bare = name.rsplit(":", 1)[-1]
        section = bare.split(".")[0]
        param = section in Params.model_fields and section not in NOT_COMPUTED
        if (param or name == COMMIT) and bare not in keys and bare != "train.seed":  # a sweep's seeds: the spread
            values = {row.get(name, "") for row in members}
            if len(values) > 1:
                out[name] = values
    return out


def pivot(
    rows: list[dict[str, str]], row_param: str, col_param: str, metric: str, where: dict[str, str] | None = None
) -> tuple[list[str], list[str], dict[tuple[str, str], list[float]]]:
    """(row keys, col keys, {(r, c): the metric of every finished experiment in that cell}) over the experiment
    rows whose columns have the values of `where`: several seeds of one cell give several values. Experiments of
    one cell that differ in more (another param, another commit) are an error naming what: a mean over them would
    mix settings."""
    cells: dict[tuple[str, str], list[float]] = {}
    members: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        cell, value = _scored(row, row_param, col_param, metric, where)
        if cell is not None and value is not None:
            cells.setdefault(cell, []).append(value)
            members.setdefault(cell, []).append(row)
    keys = _table_keys(row_param, col_param)
    unlike = {cell: found for cell, rs in members.items() if (found := _unlike(rs, keys))}
    if unlike:
        (r, c), found = next(iter(unlike.items()))
        what = "; ".join(f"{k} ({', '.join(sorted(vs, key=_order))})" for k, vs in found.items())
        k, vs = next(iter(found.items()))
        members_k = [row.get(k, "") for row in members[(r, c)]]  # the value most of the cell has (a tie: the last)
        common = max(sorted(vs, key=_order, reverse=True), key=members_k.count)
        raise TableError(
            f"the experiments of {len(unlike)} cell(s), e.g. {r} / {c}, differ in more than {row_param}, {col_param} "
            f"and the seed: {what}; a mean over them mixes settings: keep one with --where "
            f"(e.g. --where {k.rsplit(':', 1)[-1]}={common}) or make it the --rows or --cols"
        )
    rkeys = sorted({k[0] for k in cells}, key=_order)
    ckeys = sorted({k[1] for k in cells}, key=_order)
    return rkeys, ckeys, cells


def unscored(
    rows: list[dict[str, str]], row_param: str, col_param: str, metric: str, where: dict[str, str] | None = None
) -> dict[tuple[str, str], int]:
    """{(r, c): how many experiments of that cell `pivot` leaves out}: failed, queued or running ones, and finished
    ones without a finite `metric` (a cell of one seed of three looked like a cell of one). One of another commit
    or other settings than the cell's scored experiments (where it has none: than those of every cell), such as a
    failure of an older sweep `dvc exp show` still lists, is not the cell's."""
    scored: dict[tuple[str, str], list[dict[str, str]]] = {}
    missing: list[tuple[tuple[str, str], dict[str, str]]] = []
    for row in rows:
        cell, value = _scored(row, row_param, col_param, metric, where)
        if cell is not None and value is None:
            missing.append((cell, row))
        elif cell is not None:
            scored.setdefault(cell, []).append(row)
    keys = _table_keys(row_param, col_param)
    out: dict[tuple[str, str], int] = {}
    for cell, row in missing:
        alike = [scored[cell]] if cell in scored else list(scored.values())
        if not alike or any(not _unlike([*others, row], keys) for others in alike):
            out[cell] = out.get(cell, 0) + 1
    return out


def _table_keys(row_param: str, col_param: str) -> set[str]:
    """The pivot's params by their bare names (DVC's `file:` prefix off): experiments of a cell may differ there."""
    return {name.rsplit(":", 1)[-1] for name in (row_param, col_param)}


def _scored(
    row: dict[str, str], row_param: str, col_param: str, metric: str, where: dict[str, str] | None
) -> tuple[tuple[str, str] | None, float | None]:
    """(its cell, its finite metric) of an experiment row: cell None for a row outside the table (the baseline, other
    `where` values, no value of a table param), value None for one in it that has no score."""
    if row.get("typ") == "baseline" or not row.get("Experiment"):
        return None, None
    if any(column(row, k) != v for k, v in (where or {}).items()):
        return None, None
    r, c = column(row, row_param), column(row, col_param)
    if not (r and c):
        return None, None
    if row.get("State") and row["State"] != "Success":
        return (r, c), None  # queued/running experiments echo the workspace's metrics; failed ones have none
    text = column(row, metric)  # a name of several files is an error (TableError), not a missing score
    try:
        value = float(text or "")
    except ValueError:
        return (r, c), None
    return (r, c), value if math.isfinite(value) else None  # a NaN distance is no score


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# which way is better, by the start of a metric's own name (its last dotted part, without DVC's `file:`)
LOWER_BETTER = ("fd_", "kid_", "landmark_error")  # distances and errors
HIGHER_BETTER = ("attr_acc", "recall", "precision", "matte_iou")  # accuracies, detection and matting scores


def lower_is_better(metric: str) -> bool | None:
    """True for distances and errors, False for accuracies, recall, precision and IoU (`a.b.recall`, a report's
    per-attribute `attr_acc.<attribute>`, `file:` prefix or not); None for the rest (a count, a loss, a time), of
    which no cell is called the best."""
    for name in reversed(metric.rsplit(":", 1)[-1].split(".")):  # its own name, else a section's: attr_acc.<attribute>
        if name.startswith(HIGHER_BETTER):
            return False
        if name.startswith(LOWER_BETTER):
            return True
    return None


def _names(cells: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{r} / {c}" for r, c in cells)


def _verdict(cells: dict[tuple[str, str], list[float]], lower: bool | None) -> str:
    """The best cell and how the others stand to it (by the values themselves, not their rounding): their ranges
    overlap its range (not beyond the seed-to-seed spread), one value on either side (no spread to compare), or
    apart; no best when every cell's mean is the same, or when which way is better is not known (`lower` None)."""
    means = {k: spread(v)[0] for k, v in cells.items()}
    if len(cells) == 1:
        return f"One cell ({_names(cells)}): nothing to compare."
    if len(set(means.values())) == 1:
        same = _num(next(iter(means.values())))
        return f"No difference: every cell's mean is {same} (no best cell; a finding to explain)."
    if lower is None:
        known = ", ".join(f"{n}*" for n in LOWER_BETTER + HIGHER_BETTER)
        return f"No best cell: whether a higher or a lower value of this metric is better is not known ({known} are)."
    best = (min if lower else max)(cells, key=means.__getitem__)
    lo, hi = min(cells[best]), max(cells[best])
    others = sorted(k for k in cells if k != best)
    tied = [k for k in others if min(cells[k]) <= hi and max(cells[k]) >= lo]
    single = [k for k in others if k not in tied and min(len(cells[k]), len(cells[best])) == 1]
    apart = [k for k in others if k not in tied and k not in single]
    text = f"Best ({'lowest' if lower else 'highest'} mean): {_names([best])}."
    if tied:
        text += f" Within its spread (value ranges overlap): {_names(tied)}."
    if single:
        text += f" One value on either side, no spread to compare: {_names(single)}."
    if apart and (tied or single):
        text += f" Ranges clear of it: {_names(apart)}."
    elif apart:
        text += " Every other cell's range is clear of it."
    return text


def to_markdown(
    rkeys: list[str],
    ckeys: list[str],
    cells: dict,
    row_param: str,
    col_param: str,
    metric: str,
    lower: bool | None = True,
    left_out: dict[tuple[str, str], int] | None = None,
) -> str:
    """The pivot as Markdown, mean +- std (n) per cell and how many of its experiments have no score (`left_out`,
    from `unscored`), then the best cell and how the others stand to it (see _verdict) and what was left out."""
    left_out = left_out or {}
    head = f"| {metric} ({row_param} \\ {col_param}) | " + " | ".join(ckeys) + " |"
    sep = "|---" * (len(ckeys) + 1) + "|"
    body = [
        "| " + r + " | " + " | ".join(_fmt(cells.get((r, c)), left_out.get((r, c), 0)) for c in ckeys) + " |"
        for r in rkeys
    ]
    lines = [head, sep, *body]
    if cells:
        lines += ["", _verdict(cells, lower)]
    if left_out:
        n = sum(left_out.values())
        lines += [
            "",
            f"Left out: {n} experiment(s) without a {metric} (failed, queued, running or not scored), in "
            f"{_names(sorted(left_out, key=lambda k: (_order(k[0]), _order(k[1]))))}.",
        ]
    return "\n".join(lines) + "\n"


def _num(v: float) -> str:
    return f"{v:.4g}"  # significant digits: a KID of 1e-05 is not 0.0000


def _fmt(values: list[float] | None, left_out: int = 0) -> str:
    missing = f"{left_out} without a score" if left_out else ""
    if not values:
        return f"- ({missing})" if missing else "-"
    mean, std = spread(values)
    if len(values) == 1:
        return f"{_num(mean)} ({missing})" if missing else _num(mean)
    return f"{_num(mean)} ± {_num(std)} (n={len(values)}{'; ' + missing if missing else ''})"


def _literal(v: object) -> str:
    """A value in the override grammar `dvc exp run -S` reads (Hydra's): lists in brackets, an empty mapping as
    {}, plain words bare, other strings quoted: a bare comma would make a sweep, and a word Hydra reads as
    another type (`2024`, `true`, `1e3`, `null`) would be written into params.yaml as that type."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(_literal(x) for x in v) + "]"
    if v == {}:
        return "{}"
    s = str(v)
    plain = s.replace("_", "").replace("-", "").replace(".", "").isalnum()
    return s if plain and _hydra_reads(s) == s else "'" + s.replace("'", "\\'") + "'"


def _hydra_reads(word: str) -> object:
    """What `dvc exp run -S key=<word>` sets: the value Hydra's override parser (DVC's) reads from the bare word."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"key={word}").value()


def set_args(overlay_path: Path, params_path: Path = Path("params.yaml")) -> list[str]:
    """`-S key=value` arguments for `dvc exp run` from a YAML overlay of params.yaml (every leaf), after checking
    that params.yaml with the overlay applied is valid (a typo fails here, not hours into the experiment)."""
    from facegan.config import ParamsError, flatten, load_params, read_yaml

    overlay = read_yaml(overlay_path)
    if not isinstance(overlay, dict):
        raise ParamsError(f"{overlay_path}: expected a mapping of params.yaml sections")
    leaves = flatten(overlay, empty=True)  # a row `mine: {}` of the transfer runs is one too
    load_params(params_path)  # params.yaml's own problems are its own, not the overlay's
    load_params(params_path, leaves, source=f"{overlay_path} (applied to {params_path})")  # a typo is the overlay's
    present = flatten(read_yaml(params_path))
    # a key params.yaml does not spell out (a default of its section) is added, `+key=value` in DVC's (Hydra's)
    # override syntax: a plain `key=value` for it stops `dvc exp run` with "Key ... is not in struct"
    return [arg for k, v in leaves.items() for arg in ("-S", f"{'' if k in present else '+'}{k}={_literal(v)}")]
