"""Pivoting DVC experiment rows into an ablation table."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegan.errors import StageError
from facegan.experiments import column, dvc_experiments, pivot, to_markdown

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
    assert md[2] == "| hinge | 0.1250 | 0.2500 |" and md[3] == "| nonsaturating | - | 0.5000 |"
    assert md[-1] == "Best (lowest mean): hinge / plain. Every other cell's range is clear of it."


def test_seeds_of_one_cell_give_mean_spread_and_overlap():
    seeds = [
        {"Experiment": f"s{i}", "State": "Success", "train.loss": loss, "train.d_variant": "sn", "fd_dlib": v}
        for i, (loss, v) in enumerate([("hinge", "0.2"), ("hinge", "0.4"), ("lsgan", "0.35"), ("lsgan", "0.9")])
    ]
    r, c, cells = pivot(seeds, "train.loss", "train.d_variant", "fd_dlib")
    assert cells == {("hinge", "sn"): [0.2, 0.4], ("lsgan", "sn"): [0.35, 0.9]}
    md = to_markdown(r, c, cells, "train.loss", "train.d_variant", "fd_dlib").splitlines()
    assert md[2] == "| hinge | 0.3000 ± 0.1414 (n=2) |"
    assert md[-1] == "Best (lowest mean): hinge / sn. Within its spread (value ranges overlap): lsgan / sn."
    best_acc = to_markdown(r, c, cells, "train.loss", "train.d_variant", "acc", lower=False).splitlines()[-1]
    assert best_acc.startswith("Best (highest mean): lsgan / sn.")


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
    with pytest.raises(ParamsError, match="train.stepz: unknown key"):
        set_args(overlay, root / "params.yaml")
    overlay.write_text("```yaml\ntrain: {steps: 7}\n```\n")  # a snippet pasted with its fence: once a traceback
    with pytest.raises(ParamsError, match="o.yaml: not valid YAML: "):
        set_args(overlay, root / "params.yaml")
    overlay.write_text("- train.steps=7\n")
    with pytest.raises(ParamsError, match="o.yaml: expected a mapping of params.yaml sections"):
        set_args(overlay, root / "params.yaml")


def test_dvc_is_this_interpreter_s_not_the_path_s(tmp_path, monkeypatch):
    """`facegan exp-table` from a venv that is not activated: dvc runs as `python -m dvc`, so it is found, and a
    folder that is no DVC repository is dvc's one error line (not FileNotFoundError: 'dvc')."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StageError, match="dvc exp show failed: .*not inside of a DVC repository"):
        dvc_experiments(tmp_path)
