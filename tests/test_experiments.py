"""Pivoting DVC experiment rows into an ablation table."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegan.errors import StageError
from facegan.experiments import COMMIT, column, dvc_experiments, pivot, to_markdown, unscored

ROWS = [
    {"Experiment": "", "typ": "baseline", "train.loss": "hinge", "train.d_variant": "plain", "fd_dlib": "9"},
    {"Experiment": "a", "typ": "branch_commit", "train.loss": "hinge", "train.d_variant": "sn", "fd_dlib": "0.25"},
    {
        "Experiment": "b",
        "typ": "branch_commit",
        "train.loss": "nonsaturating",
        "train.d_variant": "sn",
        "fd_dlib": "0.5",
    },
    {
        "Experiment": "c",
        "typ": "branch_base",
        "params.yaml:train.loss": "hinge",
        "train.d_variant": "plain",
        "m.json:fd_dlib": "0.125",
    },
    {"Experiment": "d", "typ": "branch_commit", "train.loss": "wgan-gp", "train.d_variant": "plain", "fd_dlib": ""},
    {
        "Experiment": "e",
        "typ": "branch_commit",
        "State": "Running",
        "train.loss": "hinge",
        "train.d_variant": "projection",
        "fd_dlib": "9",
    },
    {
        "Experiment": "f",
        "typ": "branch_commit",
        "State": "Success",
        "train.loss": "wgan-gp",
        "train.d_variant": "sn",
        "fd_dlib": "0.75",
    },
]


def test_column_accepts_file_prefixed_names():
    assert column(ROWS[3], "train.loss") == "hinge" and column(ROWS[3], "fd_dlib") == "0.125"
    assert column(ROWS[3], "nope") is None


def test_pivot_skips_baseline_and_missing_metrics():
    r, c, cells = pivot(ROWS, "train.loss", "train.d_variant", "fd_dlib")
    assert r == ["hinge", "nonsaturating", "wgan-gp"] and c == ["plain", "sn"]
    assert cells == {
        ("hinge", "sn"): [0.25],
        ("nonsaturating", "sn"): [0.5],
        ("hinge", "plain"): [0.125],
        ("wgan-gp", "sn"): [0.75],
    }  # the running experiment is left out
    md = to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib").splitlines()
    assert md[2] == "| hinge | 0.125 | 0.25 |" and md[3] == "| nonsaturating | - | 0.5 |"
    assert md[-1] == (  # one experiment per cell: no spread for a difference to be beyond
        "Best (lowest mean): hinge / plain. One value on either side, no spread to compare: hinge / sn, "
        "nonsaturating / sn, wgan-gp / sn."
    )


def test_seeds_of_one_cell_give_mean_spread_and_overlap():
    seeds = [
        {"Experiment": f"s{i}", "State": "Success", "train.loss": loss, "train.d_variant": "sn", "fd_dlib": v}
        for i, (loss, v) in enumerate([("hinge", "0.2"), ("hinge", "0.4"), ("lsgan", "0.35"), ("lsgan", "0.9")])
    ]
    r, c, cells = pivot(seeds, "train.loss", "train.d_variant", "fd_dlib")
    assert cells == {("hinge", "sn"): [0.2, 0.4], ("lsgan", "sn"): [0.35, 0.9]}
    md = to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib").splitlines()
    assert md[2] == "| hinge | 0.3 ± 0.1414 (n=2) |"
    assert md[-1] == "Best (lowest mean): hinge / sn. Within its spread (value ranges overlap): lsgan / sn."
    best_acc = to_markdown(r, c, cells, "train.loss", "train.d_variant", "acc", lower=False).splitlines()[-1]
    assert best_acc.startswith("Best (highest mean): lsgan / sn.")


def test_experiments_without_a_score_are_counted_in_their_cell_and_under_the_table():
    """A cell where 2 of 3 seeds failed looked like a cell of one seed (and could be called best): the table says
    how many experiments of each cell have no score, and which cells."""
    seeds = [
        {"Experiment": f"s{i}", "State": state, "train.loss": loss, "train.d_variant": "sn", "fd_dlib": v}
        for i, (state, loss, v) in enumerate(
            [
                ("Success", "hinge", "0.2"),
                ("Failed", "hinge", ""),
                ("Success", "hinge", "nan"),  # a NaN distance is no score
                ("Success", "lsgan", "0.3"),
                ("Success", "lsgan", "0.5"),
                ("Queued", "lsgan", "0.1"),  # the workspace's metric, echoed
                ("Failed", "wgan-gp", ""),
            ]
        )
    ]
    r, c, cells = pivot(seeds, "train.loss", "train.d_variant", "fd_dlib")
    left = unscored(seeds, "train.loss", "train.d_variant", "fd_dlib")
    assert cells == {("hinge", "sn"): [0.2], ("lsgan", "sn"): [0.3, 0.5]}
    assert left == {("hinge", "sn"): 2, ("lsgan", "sn"): 1, ("wgan-gp", "sn"): 1}
    assert unscored(seeds, "train.loss", "train.d_variant", "fd_dlib", {"train.loss": "lsgan"}) == {("lsgan", "sn"): 1}
    md = to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib", left_out=left).splitlines()
    assert md[2] == "| hinge | 0.2 (2 without a score) |"
    assert md[3] == "| lsgan | 0.4 ± 0.1414 (n=2; 1 without a score) |"
    assert md[-1] == (
        "Left out: 4 experiment(s) without a fd_dlib (failed, queued, running or not scored), in hinge / sn, "
        "lsgan / sn, wgan-gp / sn."
    )
    plain = to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib").splitlines()
    assert plain[2] == "| hinge | 0.2 |" and not plain[-1].startswith("Left out")
    # a failure of an older sweep (another commit, another budget) that `dvc exp show` still lists is not the cell's
    now = {"State": "Success", "train.loss": "hinge", "train.d_variant": "sn", COMMIT: "b", "train.steps": "200"}
    sweep = [{**now, "Experiment": f"n{i}", "fd_dlib": v, "train.seed": str(i)} for i, v in enumerate(("0.2", "0.3"))]
    old = {**now, "Experiment": "o", "State": "Failed", "fd_dlib": "", COMMIT: "a", "train.steps": "2000"}
    again = {**now, "Experiment": "n2", "State": "Failed", "fd_dlib": "", "train.seed": "2"}
    assert unscored([*sweep, old], "train.loss", "train.d_variant", "fd_dlib") == {}
    assert unscored([*sweep, old, again], "train.loss", "train.d_variant", "fd_dlib") == {("hinge", "sn"): 1}
    elsewhere = {**again, "train.loss": "lsgan"}  # a cell without a score: alike with the scored ones of another
    assert unscored([*sweep, old, elsewhere], "train.loss", "train.d_variant", "fd_dlib") == {("lsgan", "sn"): 1}


def test_exp_args_turn_an_overlay_into_checked_set_params(tmp_path):
    import shlex
    import shutil

    import pytest
    import yaml
    from dvc.utils.hydra import apply_overrides

    from facegan.config import ParamsError, flatten, load_params
    from facegan.experiments import set_args

    root = Path(__file__).resolve().parents[1]
    overlay = tmp_path / "o.yaml"
    overlay.write_text("train:\n  steps: 7\n  diffaugment: [color, cutout]\ntransfer:\n  seeds: [0, 1]\n")
    args = set_args(overlay, root / "params.yaml")
    assert args == ["-S", "train.steps=7", "-S", "train.diffaugment=[color,cutout]", "-S", "transfer.seeds=[0,1]"]
    assert shlex.split(" ".join(shlex.quote(a) for a in args)) == args  # what `eval` in the Makefile sees
    for name in ("params.transfer-study.yaml", "params.ablation.yaml"):  # the shipped budgets are valid ...
        args = set_args(root / name, root / "params.yaml")
        shutil.copy(root / "params.yaml", tmp_path / "params.yaml")  # ... and DVC applies every one of them
        apply_overrides(str(tmp_path / "params.yaml"), [a for a in args if a != "-S"])
        assert flatten(load_params(tmp_path / "params.yaml")) == flatten(
            load_params(root / "params.yaml", flatten(yaml.safe_load((root / name).read_text())))
        )
    # a default params.yaml does not spell out is added (`+key`): `key=...` stops `dvc exp run` ("not in struct")
    overlay.write_text("transfer:\n  finetune:\n    fid_samples: 64\n")
    assert set_args(overlay, root / "params.yaml") == ["-S", "+transfer.finetune.fid_samples=64"]
    overlay.write_text("train:\n  stepz: 7\n")
    with pytest.raises(
        ParamsError, match=r"(?s)o.yaml \(applied to .*params.yaml\): 1 invalid value.*train.stepz: unknown key"
    ):
        set_args(overlay, root / "params.yaml")
    overlay.write_text("```yaml\ntrain: {steps: 7}\n```\n")  # a snippet pasted with its fence: once a traceback
    with pytest.raises(ParamsError, match="o.yaml: not valid YAML at line 1, column 1: found character '`'"):
        set_args(overlay, root / "params.yaml")
    overlay.write_text("- train.steps=7\n")
    with pytest.raises(ParamsError, match="o.yaml: expected a mapping of params.yaml sections"):
        set_args(overlay, root / "params.yaml")

    # strings DVC (Hydra) would read as a number, a bool or null were passed bare: params.yaml then held an int
    # where a string belongs, and `facegan check` failed; a row `mine: {}` of the transfer runs was left out
    overlay.write_text(
        "tracking: {experiment: '2024'}\nevaluate: {inception_weights: '1e3'}\ntransfer: {runs: {mine: {}}}\n"
    )
    args = set_args(overlay, root / "params.yaml")
    assert (
        "tracking.experiment='2024'" in args
        and "+transfer.runs.mine={}" in args
        and "evaluate.inception_weights='1e3'" in args
    )
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(str(tmp_path / "params.yaml"), [a for a in args if a != "-S"])
    applied = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert applied["tracking"]["experiment"] == "2024" and applied["evaluate"]["inception_weights"] == "1e3"
    assert applied["transfer"]["runs"]["mine"] == {}
    assert load_params(tmp_path / "params.yaml").transfer.runs["mine"] == {}
    # a typo in params.yaml itself is named as params.yaml's, not the overlay's
    (tmp_path / "typo.yaml").write_text((root / "params.yaml").read_text().replace("\n  steps:", "\n  stpes:", 1))
    overlay.write_text("train: {steps: 7}\n")
    with pytest.raises(ParamsError) as e:
        set_args(overlay, tmp_path / "typo.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'typo.yaml'}: 1 invalid value") and "applied to" not in str(e.value)


def test_dvc_is_this_interpreter_s_not_the_path_s(tmp_path, monkeypatch):
    """`facegan exp-table` from a venv that is not activated: dvc runs as `python -m dvc`, so it is found, and a
    folder that is no DVC repository is dvc's one error line (not FileNotFoundError: 'dvc')."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StageError, match="dvc exp show failed: .*not inside of a DVC repository"):
        dvc_experiments(tmp_path)


def _exp(name: str, fd: str, **params: str) -> dict[str, str]:
    """An experiment row of `dvc exp show --csv` (params by dotted name, `__` for `.`), finished."""
    row = {"Experiment": name, "rev": name, "typ": "branch_commit", "State": "Success", "fd_dlib": fd}
    return row | {k.replace("__", "."): v for k, v in params.items()}


def test_a_metric_of_several_files_is_an_error_naming_them():
    from facegan.experiments import TableError

    row = {**ROWS[1], "data/reports/cartoon/metrics.json:fd_dlib": "1", "data/reports/sketch/metrics.json:fd_dlib": "9"}
    del row["fd_dlib"]
    with pytest.raises(TableError) as e:
        pivot([row], "train.loss", "train.d_variant", "fd_dlib")
    assert str(e.value) == (
        "fd_dlib is a column of 2 files: data/reports/cartoon/metrics.json:fd_dlib, "
        "data/reports/sketch/metrics.json:fd_dlib; pass the one you mean in full"
    )
    full = "data/reports/sketch/metrics.json:fd_dlib"
    assert pivot([row], "train.loss", "train.d_variant", full)[2] == {("hinge", "sn"): [9.0]}
    # the full name also where only one file has the metric (DVC names no file then): `make sweep` passes it
    assert pivot(ROWS[1:2], "train.loss", "train.d_variant", full)[2] == {("hinge", "sn"): [0.25]}


def test_experiments_of_one_cell_that_differ_in_more_than_the_seed_are_refused():
    from facegan.experiments import TableError

    rows = [
        _exp(f"e{seed}{steps}", str(seed + steps / 1000), train__loss="hinge", train__d_variant="sn",
             train__seed=str(seed), train__steps=str(steps), workers=str(seed + 1), commit="main")
        for seed in (0, 1)
        for steps in (200, 2000)
    ]  # fmt: skip
    with pytest.raises(TableError) as e:
        pivot(rows, "train.loss", "train.d_variant", "fd_dlib")
    assert "e.g. hinge / sn" in str(e.value) and "train.steps (200, 2000)" in str(e.value)
    assert "seed" not in str(e.value).split(": ", 1)[1].split(";")[0]  # seeds are what a cell spreads over
    assert "workers" not in str(e.value) and "--where train.steps=2000" in str(e.value)
    # one setting: the seeds of the cell, and a --where of its own
    assert pivot(rows, "train.loss", "train.d_variant", "fd_dlib", {"train.steps": "2000"})[2] == {
        ("hinge", "sn"): [2.0, 3.0]
    }
    # the same params at two commits (`dvc exp show --all-commits`): not seeds of one setting either
    rows = [_exp(f"c{i}", str(i), train__loss="hinge", train__d_variant="sn", train__seed="0", commit=f"r{i}")
            for i in (1, 2)]  # fmt: skip
    with pytest.raises(TableError, match=r"commit \(r1, r2\)"):
        pivot(rows, "train.loss", "train.d_variant", "fd_dlib")


def test_only_train_seed_spreads_a_cell_and_the_hint_is_the_cells_own_setting():
    """Seeds of other things (the generated data's, evaluate's) are settings like any other, not the cell's spread;
    the --where the error suggests is the value most of the cell's experiments have (a transfer-study experiment
    landing in a sweep's cell is the odd one out)."""
    from facegan.experiments import TableError

    data = [_exp(f"d{s}", str(s), train__loss="hinge", train__d_variant="sn", datasets__cartoon__source__seed=str(s),
                 commit="main") for s in (0, 1)]  # fmt: skip
    with pytest.raises(TableError, match=r"datasets.cartoon.source.seed \(0, 1\)"):
        pivot(data, "train.loss", "train.d_variant", "fd_dlib")
    sweep = [_exp(f"s{s}", str(s), train__loss="hinge", train__d_variant="sn", train__model="acgan",
                  train__seed=str(s), commit="main") for s in (0, 1, 2)]  # fmt: skip
    odd = _exp(
        "t", "9", train__loss="hinge", train__d_variant="sn", train__model="dcgan", train__seed="0", commit="main"
    )
    with pytest.raises(TableError, match="e.g. --where train.model=acgan"):
        pivot([*sweep, odd], "train.loss", "train.d_variant", "fd_dlib")


def test_dvc_experiments_name_each_experiment_s_commit(monkeypatch):
    import subprocess

    from facegan.experiments import COMMIT

    csv_text = "Experiment,rev,typ,fd_dlib\n,workspace,baseline,1\n,main,baseline,1\na,a1,branch_commit,2\n"
    csv_text += ",abc1234,baseline,1\nb,b1,branch_base,3\n"
    cmds = []
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **k: cmds.append(cmd) or subprocess.CompletedProcess(cmd, 0, csv_text, "")
    )
    assert len(dvc_experiments(all_commits=True)) == 5 and "--all-commits" in cmds[-1]
    rows = dvc_experiments()  # the current commit's: --all-commits read a history of 436 commits for 2m39s
    assert cmds[-1][-3:] == ["exp", "show", "--csv"] and "--all-commits" not in cmds[-1]
    assert [(r["Experiment"], r.get(COMMIT)) for r in rows] == [
        ("", None),
        ("", None),
        ("a", "main"),
        ("", None),
        ("b", "abc1234"),
    ]


def test_cells_that_do_not_differ_name_no_best_and_small_values_keep_their_digits():
    same = [_exp(f"s{i}", "0.5", train__loss=loss, train__d_variant="sn") for i, loss in enumerate(["a", "b"])]
    r, c, cells = pivot(same, "train.loss", "train.d_variant", "fd_dlib")
    md = to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib").splitlines()
    assert md[-1] == "No difference: every cell's mean is 0.5 (no best cell; a finding to explain)."
    kid = [_exp(f"k{i}", v, train__loss=loss, train__d_variant="sn") for i, (loss, v) in enumerate(
        [("a", "1e-05"), ("a", "1.2e-05"), ("b", "3e-05"), ("b", "3.5e-05")])]  # fmt: skip
    r, c, cells = pivot(kid, "train.loss", "train.d_variant", "fd_dlib")
    md = to_markdown(r, c, cells, "train.loss", "train.d_variant", "kid_dlib").splitlines()
    assert md[2] == "| a | 1.1e-05 ± 1.414e-06 (n=2) |" and md[3] == "| b | 3.25e-05 ± 3.536e-06 (n=2) |"
    assert md[-1] == "Best (lowest mean): a / sn. Every other cell's range is clear of it."


def test_one_value_on_either_side_is_not_called_clear():
    rows = [_exp(f"x{i}", v, train__loss=loss, train__d_variant="sn") for i, (loss, v) in enumerate(
        [("a", "1"), ("a", "1.2"), ("b", "3"), ("c", "5"), ("c", "6")])]  # fmt: skip
    r, c, cells = pivot(rows, "train.loss", "train.d_variant", "fd_dlib")
    assert to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib").splitlines()[-1] == (
        "Best (lowest mean): a / sn. One value on either side, no spread to compare: b / sn. "
        "Ranges clear of it: c / sn."
    )


def test_numbers_sort_as_numbers_and_nan_is_no_score():
    rows = [_exp(f"n{s}", v, train__loss="a", train__d_variant=s) for s, v in (("10", "1"), ("2", "2"), ("x", "nan"))]
    r, c, cells = pivot(rows, "train.loss", "train.d_variant", "fd_dlib")
    assert c == ["2", "10"] and cells == {("a", "2"): [2.0], ("a", "10"): [1.0]}


def _cli(capsys, monkeypatch, rows: list[dict], *args: str) -> tuple[int, str, str]:
    from facegan import experiments
    from facegan.cli import main

    monkeypatch.setattr(experiments, "dvc_experiments", lambda root=Path("."), all_commits=False: rows)
    with pytest.raises(SystemExit) as e:
        main(["exp-table", *args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_exp_table_names_the_column_it_used_ranks_prefixed_accuracies_up_and_makes_the_out_folder(
    capsys, monkeypatch, tmp_path
):
    acc = "data/reports/cartoon/metrics.json:attr_acc_mean"
    rows = [
        {"Experiment": f"a{i}", "train.loss": loss, "train.d_variant": "sn", acc: v}
        for i, (loss, v) in enumerate([("hinge", "0.6"), ("hinge", "0.62"), ("lsgan", "0.9"), ("lsgan", "0.93")])
    ]
    out = tmp_path / "new" / "sweep.md"
    code, text, err = _cli(capsys, monkeypatch, rows, "--metric", "attr_acc_mean", "--out", str(out))
    assert code == 0, err
    assert text.splitlines()[0] == f"| {acc} (train.loss \\ train.d_variant) | sn |"
    assert "Best (highest mean): lsgan / sn." in text and out.read_text() == text.rstrip("\n") + "\n"
    code, _, err = _cli(capsys, monkeypatch, [{**rows[0], acc.replace("cartoon", "sketch"): "1"}], "--metric",
                        "attr_acc_mean")  # fmt: skip
    assert code == 2 and err.startswith("error: attr_acc_mean is a column of 2 files: ") and "Traceback" not in err
    code, text, err = _cli(capsys, monkeypatch, rows, "--metric", acc, "--where", "train.loss=hinge")
    assert code == 0 and "| hinge | 0.61 ± 0.01414 (n=2) |" in text and "lsgan" not in text
    code, _, err = _cli(capsys, monkeypatch, rows, "--where", "train.loss")
    assert code == 2 and "'train.loss': expected KEY=VALUE" in err
    failed = [{**rows[0], "Experiment": "x", "State": "Failed", acc: ""}]
    code, text, err = _cli(capsys, monkeypatch, rows + failed, "--metric", acc, "--where", "train.loss=hinge")
    assert code == 0 and "| hinge | 0.61 ± 0.01414 (n=2; 1 without a score) |" in text
    assert "Left out: 1 experiment(s) without a " + acc in text
    code, text, err = _cli(capsys, monkeypatch, failed, "--metric", acc)
    assert code == 1 and f"1 experiment(s) with train.loss and train.d_variant have no {acc} (failed, queued" in err


def test_exp_table_ranks_each_score_its_own_way_and_a_misspelt_name_is_named(capsys, monkeypatch):
    """A higher matte IoU, recall or precision was called worse ("Best (lowest mean)": every metric but attr_acc*
    was taken for a distance); a misspelt param or metric read as "no experiments ...; run a sweep first"."""
    from facegan.experiments import lower_is_better

    iou = "data/reports/cartoon/metrics.json:preprocessing.matte.matte_iou"
    rows = [
        {"Experiment": f"e{i}", "datasets.cartoon.matte.backend": b, "train.d_variant": "sn", iou: v}
        for i, (b, v) in enumerate([("grabcut", "0.88"), ("grabcut", "0.9"), ("none", "0.3"), ("none", "0.32")])
    ]
    code, text, err = _cli(capsys, monkeypatch, rows, "--rows", "datasets.cartoon.matte.backend", "--metric", iou)
    assert code == 0, err
    assert "Best (highest mean): grabcut / sn." in text
    for name in ("preprocessing.detect.recall", "m.json:precision", "attr_acc_mean", "r/metrics.json:attr_acc.hair"):
        assert lower_is_better(name) is False, name
    for name in ("fd_dlib", "a_to_b.fd_inception", "kid_dlib", "preprocessing.align.landmark_error_iod_pct"):
        assert lower_is_better(name) is True, name
    steps = [{**r, "training.steps": str(400 + i)} for i, r in enumerate(rows)]
    code, text, err = _cli(
        capsys, monkeypatch, steps, "--rows", "datasets.cartoon.matte.backend", "--metric", "training.steps"
    )
    assert code == 0 and lower_is_better("training.steps") is None
    assert "Best" not in text and "No best cell: whether a higher or a lower value of this metric is better" in text

    monkeypatch.setenv("COLUMNS", "200")
    code, _, err = _cli(capsys, monkeypatch, rows, "--rows", "datasets.cartoon.matte.backnd", "--metric", iou)
    assert code == 2 and err.startswith("error: datasets.cartoon.matte.backnd: no param or metric of that name")
    assert "did you mean datasets.cartoon.matte.backend?" in err
    code, _, err = _cli(capsys, monkeypatch, rows, "--rows", "datasets.cartoon.matte.backend", "--metric", "fd_dlibb")
    assert code == 2 and "error: fd_dlibb: no param or metric of that name in the DVC experiments (a metric" in err
    code, _, err = _cli(capsys, monkeypatch, rows, "--rows", "datasets.cartoon.matte.backend", "--metric", iou,
                        "--where", "train.d_variantt=sn")  # fmt: skip
    assert code == 2 and "train.d_variantt: no param or metric of that name" in err and "train.d_variant?" in err


def test_exp_table_without_metric_ranks_by_the_first_dataset_s_fd_dlib(capsys, monkeypatch, tmp_path):
    """The default --metric was fd_dlib, which every dataset's report has: with the default two datasets' reports
    (what `make run` and a sweep make) the command without --metric was an error asking for the full name."""
    import shutil

    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")  # cartoon first
    monkeypatch.chdir(tmp_path)
    cartoon, sketch = (f"data/reports/{d}/metrics.json:fd_dlib" for d in ("cartoon", "sketch"))
    rows = [
        {"Experiment": f"e{i}", "train.loss": loss, "train.d_variant": "sn", cartoon: c, sketch: s}
        for i, (loss, c, s) in enumerate([("hinge", "0.5", "9"), ("lsgan", "0.25", "8")])
    ]
    code, text, err = _cli(capsys, monkeypatch, rows)
    assert code == 0, err
    assert text.splitlines()[0] == f"| {cartoon} (train.loss \\ train.d_variant) | sn |"
    assert "| lsgan | 0.25 |" in text and "Best (lowest mean): lsgan / sn." in text
    only_sketch = [{k: v for k, v in row.items() if k != cartoon} | {"fd_dlib": row[sketch]} for row in rows]
    for row in only_sketch:  # experiments of another dataset's report alone: DVC names no file
        del row[sketch]
    code, text, err = _cli(capsys, monkeypatch, only_sketch)
    assert code == 0 and text.splitlines()[0] == "| fd_dlib (train.loss \\ train.d_variant) | sn |", err
    (tmp_path / "params.yaml").unlink()  # no project here: the bare name, as before
    code, _, err = _cli(capsys, monkeypatch, rows)
    assert code == 2 and err.startswith("error: fd_dlib is a column of 2 files: ")
