"""Table 1, the figures and the HTML page, from summaries and pre-training outputs the tests write."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from gvsl import report
from gvsl.checkpoint import PRETRAIN_STATE_FORMAT
from gvsl.data.dataset import DatasetInfo, DatasetWriter
from gvsl.errors import GVSLInputError
from gvsl.nets import GVSL, GVSLConfig
from gvsl.pipeline import compose
from gvsl.pretext import registration_example

TINY_CHANNELS = (8,) * 9


NEGATIVES = np.arange(4.0)  # classification test cases 0-3 are negatives scored 0, 1, 2, 3


def auc_cases(above):
    """Per-case record of four negatives and four positives, positive i scoring above ``above[i]`` negatives
    (AUC = sum(above) / 16)."""
    return {"probability": [*NEGATIVES, *(a - 0.5 for a in above)], "target": [0] * 4 + [1] * 4}


def write_summary(
    root, task, protocol, method, tests, metric="dice", curves=None, commit="abc1234", converged=True, fraction=1.0
):
    """``tests``: per run, a test Dice (every case scores it) or, for AUC, ``auc_cases``' argument. Run s has
    pre-training seed s and transfer seed s (each pre-training seed's run its own transfer seed)."""
    folder = root / method / (f"{task}-{protocol}" if fraction == 1 else f"{task}-{protocol}-labels{fraction:g}")
    folder.mkdir(parents=True)
    if metric == "auc":
        per_case = [auc_cases(above) for above in tests]
        tests = [sum(above) / 16 for above in tests]
    else:
        per_case = [{"dice": [[t]] * 5} for t in tests]
    finite = [t for t in tests if not math.isnan(t)]
    summary = {
        "task": task,
        "protocol": protocol,
        "method": method,
        "metric": metric,
        "seeds": list(range(len(tests))),
        "pretrain_seeds": list(range(len(tests))),
        "runs": [[s, s] for s in range(len(tests))],
        "test": tests,
        "mean": float(np.mean(finite)) if finite else math.nan,
        "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan,
        "n_runs": len(finite),
        "val_curves": curves or [[[10, 0.1 * (s + 1)], [20, 0.2 * (s + 1)]] for s in range(len(tests))],
        "converged": converged,
        "case_ids": [f"case{i}" for i in range(len(per_case[0].get("probability", per_case[0].get("dice"))))],
        "per_case": per_case,
        "dataset_source": "phantom-ct",
        "profile": "unit",
        "commit": commit,
        "fraction": fraction,
        "train_cases": [[f"train{i}" for i in range(round(8 * fraction))]] * len(tests),
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def summaries(tmp_path):
    root = tmp_path / "transfer"
    write_summary(root, "SHC", "linear", "scratch", [0.20, 0.30])
    write_summary(root, "SHC", "linear", "gvsl", [0.60, 0.70, 0.80])
    # AUC 0.5 and 0.75; 0.875 and 1.0
    write_summary(root, "CCC", "finetune", "scratch", [[4, 4, 0, 0], [4, 4, 4, 0]], metric="auc")
    write_summary(
        root, "CCC", "finetune", "gvsl", [[4, 4, 4, 2], [4, 4, 4, 4]], metric="auc", commit="def5678", converged=False
    )
    return report.load_summaries(root)


def test_table1_is_long_format_in_percent_beside_the_paper(summaries):
    table = report.table1(summaries, profile="unit")
    assert list(table.columns) == [
        "method",
        "protocol",
        "task",
        "metric",
        "value",
        "sd",
        "n_runs",
        "converged",
        "gain",
        "gain_low",
        "gain_high",
        "paper_value",
        "paper_gain",
        "dataset",
        "profile",
    ]
    assert len(table) == 4  # only the settings that ran
    row = table[(table.method == "gvsl") & (table.task == "SHC")].iloc[0]
    assert row.value == pytest.approx(70.0) and row.sd == pytest.approx(10.0) and row.n_runs == 3
    assert row.paper_value == 68.4 and row.paper_gain == pytest.approx(68.4 - 21.9)  # He et al. Table 1
    # paired by seed: runs p0-t0 and p1-t1 (gvsl's p2-t2 has no scratch partner); two seeds: no interval
    assert row.gain == pytest.approx(40.0) and math.isnan(row.gain_low) and math.isnan(row.gain_high)
    scratch_ccc = table[(table.method == "scratch") & (table.task == "CCC")].iloc[0]
    assert (scratch_ccc.value, scratch_ccc.paper_value, scratch_ccc.metric) == (pytest.approx(62.5), 74.4, "auc")
    assert math.isnan(scratch_ccc.gain) and scratch_ccc.converged
    gvsl_ccc = table[(table.method == "gvsl") & (table.task == "CCC")].iloc[0]
    assert gvsl_ccc.gain == pytest.approx(31.25) and math.isnan(gvsl_ccc.gain_low)
    assert not gvsl_ccc.converged
    assert set(table.profile) == {"unit"} and set(table.dataset) == {"phantom-ct"}


def test_five_seeds_give_intervals_and_stars(tmp_path):
    root = tmp_path / "transfer"
    write_summary(root, "SHC", "linear", "scratch", [0.20, 0.30, 0.25, 0.20, 0.30])
    write_summary(root, "SHC", "linear", "gvsl", [0.60, 0.70, 0.65, 0.60, 0.70])
    table = report.table1(report.load_summaries(root), profile="unit")
    row = table[table.method == "gvsl"].iloc[0]
    # every seed and case gains 40 points: no spread
    assert (row.gain, row.gain_low, row.gain_high) == pytest.approx((40.0, 40.0, 40.0))
    assert "| GVSL (whole) | +40.0 [+40.0, +40.0]* / +46.5 |" in report.table1_markdown(table)


def test_gain_interval_resamples_test_cases(tmp_path):
    """Five runs, a gain of 0.1 on average that varies from case to case: the interval has width and covers it."""
    root = tmp_path / "transfer"
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, size=(5, 12, 1))
    for method, dice in (("scratch", base), ("gvsl", base + rng.normal(0.1, 0.05, size=base.shape))):
        summary = write_summary(root, "SBM", "finetune", method, [0.0] * 5)
        summary["per_case"] = [{"dice": d.tolist()} for d in dice]
        summary["case_ids"] = [f"case{i}" for i in range(12)]
        (root / method / "SBM-finetune" / "summary.json").write_text(json.dumps(summary))
    loaded = report.load_summaries(root)
    gain, low, high = report.gain_interval(
        loaded[loaded.method == "gvsl"].iloc[0], loaded[loaded.method == "scratch"].iloc[0]
    )
    assert 0.05 < low < gain < high < 0.15
    assert high - low > 0.02


def test_paper_table_has_every_setting_of_table1():
    assert len(report.PAPER_TABLE1) == 13 * 2 * 4
    assert report.PAPER_TABLE1[("no_fundament", "linear", "SAC")] == 0.0
    assert report.PAPER_TABLE1[("gvsl", "finetune", "SBM")] == 90.0
    assert report.PAPER_TABLE1[("rotation", "linear", "SHC")] == 56.1
    # rows the kit does not record are NaN, never a made-up number
    recorded = {"scratch", "models_genesis", "rotation", "simclr", "no_zmatch", "no_fundament", "no_affine", "gvsl"}
    assert {m for (m, _, _), v in report.PAPER_TABLE1.items() if not math.isnan(v)} == recorded


def test_markdown_puts_paper_values_and_gains_beside_ours(summaries):
    markdown = report.table1_markdown(report.table1(summaries, profile="unit"))
    assert "| GVSL (whole) | 70.0 ± 10.0 (paper 68.4) | 93.8 ± 8.8 † (paper 82.2) |" in markdown
    # gains, paired by seed: SHC linear (0.6 + 0.7) / 2 - 0.25, paper 68.4 - 21.9; CCC fine-tune 93.75 - 62.5,
    # paper 82.2 - 74.4; two seeds each: no interval (‡)
    assert "| GVSL (whole) | +40.0 ‡ / +46.5 | +31.2 ‡ / +7.8 |" in markdown
    assert "‡ fewer than 5 pre-training seeds" in markdown
    assert "† validation curve not plateaued" in markdown
    assert "(a) linear SHC Dice" in markdown and "(b) fine-tune CCC AUC" in markdown


def test_metrics_summary_nests_protocol_task_method(summaries):
    metrics = report.metrics_summary(report.table1(summaries, profile="unit"))
    shc, ccc = metrics["linear"]["SHC"], metrics["finetune"]["CCC"]
    assert shc["scratch"] == {"value": 25.0, "converged": True}
    assert shc["gvsl"] == {"value": 70.0, "gain": 40.0, "gain_low": None, "gain_high": None, "converged": True}
    assert ccc["gvsl"]["value"] == 93.75 and ccc["gvsl"]["gain"] == 31.25 and ccc["gvsl"]["converged"] is False


def test_a_setting_whose_seeds_all_failed_shows_a_dash(tmp_path):
    root = tmp_path / "transfer"
    write_summary(root, "SAC", "linear", "scratch", [0.1])
    summary = json.loads((root / "scratch" / "SAC-linear" / "summary.json").read_text())
    summary.update(mean=math.nan, n_runs=0)
    (root / "scratch" / "SAC-linear" / "summary.json").write_text(json.dumps(summary))
    table = report.table1(report.load_summaries(root), profile="unit")
    assert report.metrics_summary(table) == {"linear": {"SAC": {"scratch": {"value": None, "converged": True}}}}
    assert "| Scratch | – (paper 10.0) |" in report.table1_markdown(table)


def test_bad_summaries_are_named(tmp_path):
    root = tmp_path / "transfer"
    with pytest.raises(GVSLInputError, match="no transfer results"):
        report.load_summaries(root)
    write_summary(root, "SHC", "linear", "gvsl", [0.5, 0.6])
    broken = root / "gvsl" / "SHC-finetune" / "summary.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with pytest.raises(GVSLInputError, match=r"gvsl/SHC-finetune/summary.json: unreadable"):
        report.load_summaries(root)
    broken.write_text(json.dumps({"task": "SHC"}))
    with pytest.raises(GVSLInputError, match=r"lacks \['case_ids', 'commit'"):
        report.load_summaries(root)
    broken.unlink()
    write_summary(root, "SHC", "probe", "gvsl", [0.5])
    with pytest.raises(GVSLInputError, match="unknown setting SHC-probe-gvsl"):
        report.load_summaries(root)


def test_provenance_names_sources_seeds_and_commits(summaries):
    settings = compose(
        {
            "profile": "unit",
            "model": {"channels": list(TINY_CHANNELS)},
            "pretrain": {"iterations": 2},
            "transfer": {"linear": {"iterations": 3, "min_iterations": 0}},
        }
    )
    facts = report.provenance(summaries, settings)
    assert facts["commits"] == ["abc1234", "def5678"]
    assert facts["transfer seeds per protocol"] == {"linear": [0, 1, 2], "finetune": [0, 1]}
    assert facts["pre-training seeds"] == [0, 1, 2]
    assert facts["data sources"] == {"SHC": ["phantom-ct"], "CCC": ["phantom-ct"]}
    assert facts["backbone widths"] == list(TINY_CHANNELS)
    # every setting the run used, the defaults it kept too
    assert facts["pre-training"]["iterations"] == 2 and facts["pre-training"]["lr"] == 1e-4
    assert facts["transfer"]["linear"]["iterations"] == 3 and facts["transfer"]["finetune"]["iterations"] == 40_000


def test_figure6_draws_one_mean_curve_per_method(tmp_path):
    root = tmp_path / "transfer"
    for method in ("scratch", "no_zmatch", "gvsl"):
        write_summary(root, "SHC", "finetune", method, [0.5, 0.6])
    fig = report.figure6_validation(report.load_summaries(root), task="SHC", protocol="finetune")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["Scratch", "w/o Z-Matching", "GVSL (whole)"]
    # mean over the two seeds' curves, in percent
    np.testing.assert_allclose(lines[0].get_ydata(), [15.0, 30.0])


def test_figure6_ends_where_the_shortest_run_stopped(tmp_path):
    root = tmp_path / "transfer"
    # the second run stopped on a plateau at 20; a mean beyond would be the first run alone
    write_summary(
        root,
        "SHC",
        "finetune",
        "scratch",
        [0.5, 0.6],
        curves=[[[10, 0.1], [20, 0.3], [30, 0.9]], [[10, 0.3], [20, 0.5]]],
    )
    fig = report.figure6_validation(report.load_summaries(root), task="SHC", protocol="finetune", methods=["scratch"])
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [10, 20])
    np.testing.assert_allclose(line.get_ydata(), [20.0, 40.0])


def write_log(folder, metric, steps, values):
    path = folder / "dvclive" / "plots" / "metrics" / f"{metric}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"timestamp": 0, "step": steps, metric.split("/")[1]: values}).to_csv(path, sep="\t", index=False)


def test_figure8_draws_training_and_heldout_curves_as_means_over_seeds(tmp_path):
    for variant, start in (("no_fundament", 0.9), ("gvsl", 0.8)):
        for seed, shift in ((0, 0.0), (1, 0.1)):
            folder = tmp_path / variant / f"seed{seed}"
            write_log(folder, "train/ncc", range(5), np.linspace(start, start - 0.2, 5) + shift)
            write_log(folder, "heldout/ncc", [0, 2, 4], [0.5, 0.4 - shift, 0.3])
            write_log(folder, "heldout/identity_ncc", [0, 2, 4], [0.5] * 3)
            write_log(folder, "heldout/warped_dice", [0, 2, 4], [0.55, 0.6, 0.65 + shift])
            write_log(folder, "heldout/identity_dice", [0, 2, 4], [0.55] * 3)
    write_log(tmp_path / "gvsl" / "seed0", "heldout/affine_dice", [0, 2, 4], [0.55, 0.57, 0.58])
    fig = report.figure8_pretext(tmp_path, variants=("no_fundament", "gvsl"), smooth_window=1)
    train, heldout_ncc, heldout_dice = fig.axes
    assert len(train.get_lines()) == 4  # raw and smoothed per variant
    np.testing.assert_allclose(train.get_lines()[1].get_ydata(), np.linspace(0.95, 0.75, 5))
    np.testing.assert_allclose(heldout_ncc.get_lines()[0].get_ydata(), [0.5, 0.35, 0.3])
    dice_lines = {line.get_label(): line for line in heldout_dice.get_lines()}
    np.testing.assert_allclose(dice_lines["whole GVSL"].get_ydata(), [55.0, 60.0, 70.0])
    np.testing.assert_allclose(dice_lines["whole GVSL, affine only"].get_ydata(), [55.0, 57.0, 58.0])
    np.testing.assert_allclose(dice_lines["identity (no registration)"].get_ydata(), [55.0, 55.0])


def write_pretext(folder, identity, warped, ncc_first=0.5, ncc_last=0.3):
    folder.mkdir(parents=True, exist_ok=True)
    per_pair = {"ncc": [ncc_last] * len(warped), "identity_dice": identity, "warped_dice": warped}
    pairs = [["a", "b"], ["b", "c"], ["c", "a"]][: len(warped)]
    record = {
        "pairs": pairs,
        "iterations": 10,
        "first": {"iteration": 0, "mean": {"ncc": ncc_first}, "per_pair": {}},
        "last": {"iteration": 10, "mean": {"ncc": ncc_last}, "per_pair": per_pair},
    }
    (folder / "pretext.json").write_text(json.dumps(record))


def test_pretext_metrics_give_the_gain_over_identity_with_an_interval(tmp_path):
    warped = [[0.6, 0.7, 0.66], [0.58, 0.69, 0.63], [0.61, 0.7, 0.64], [0.59, 0.68, 0.65], [0.6, 0.71, 0.64]]
    for seed, values in enumerate(warped):
        write_pretext(tmp_path / "gvsl" / f"seed{seed}", [0.5, 0.6, 0.55], values)
        if seed < 2:
            write_pretext(tmp_path / "no_affine" / f"seed{seed}", [0.5, 0.6, 0.55], values)
    write_pretext(tmp_path / "no_fundament" / "seed0", [0.5, 0.6], [0.5, 0.6])
    metrics = report.pretext_metrics(report.load_pretext(tmp_path))
    gvsl = metrics["gvsl"]
    assert (gvsl["seeds"], gvsl["subjects"], gvsl["pairs"]) == (5, 3, 3) and "affine_dice" not in gvsl
    assert gvsl["identity_dice"] == pytest.approx(55.0) and gvsl["warped_dice"] == pytest.approx(64.53, abs=0.01)
    assert gvsl["warped_gain"] == pytest.approx(143 / 15, abs=0.01)
    assert 0 < gvsl["warped_gain_low"] < gvsl["warped_gain"] < gvsl["warped_gain_high"]
    assert (gvsl["heldout_ncc_first"], gvsl["heldout_ncc_last"]) == (0.5, 0.3)
    # fewer than five seeds: the mean gain without an interval
    assert metrics["no_affine"]["warped_gain"] == pytest.approx(56 / 6, abs=0.01)
    assert metrics["no_affine"]["warped_gain_low"] is None and metrics["no_affine"]["warped_gain_high"] is None
    assert metrics["no_fundament"]["warped_gain"] == 0.0 and metrics["no_fundament"]["warped_gain_low"] is None


def test_pretext_metrics_give_the_affine_parts_gain_and_its_scores_on_known_misalignments(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(5):
        folder = tmp_path / "gvsl" / f"seed{seed}"
        write_pretext(folder, [0.5, 0.6, 0.55], [0.7, 0.75, 0.7])
        record = json.loads((folder / "pretext.json").read_text())
        record["last"]["per_pair"]["affine_dice"] = [0.6, 0.65, 0.6]
        true = rng.uniform(-3, 3, size=(3, 3))
        record["last"]["misalignment"] = {
            "subjects": ["a", "b", "c"],
            "mean": {},
            "per_pair": {
                "error_identity": [4.0, 5.0, 6.0],
                "error_affine": [1.0, 1.0 + 0.1 * seed, 3.0],
                "identity_dice": [0.3, 0.4, 0.35],
                "affine_dice": [0.6, 0.7, 0.5],
                "true_translation": true.tolist(),
                "predicted_translation": (0.5 * true).tolist(),
            },
        }
        (folder / "pretext.json").write_text(json.dumps(record))
    gvsl = report.pretext_metrics(report.load_pretext(tmp_path))["gvsl"]
    assert gvsl["affine_gain"] == pytest.approx(100 * (0.6 + 0.65 + 0.6 - 1.65) / 3, abs=0.01)
    assert gvsl["affine_gain_low"] < gvsl["affine_gain"] < gvsl["affine_gain_high"]
    # the share of the known displacement removed: 1 - error_affine / error_identity, in percent
    expected = np.mean([[1 - 1 / 4, 1 - (1 + 0.1 * s) / 5, 1 - 3 / 6] for s in range(5)]) * 100
    assert gvsl["misalignment_recovered"] == pytest.approx(expected, abs=0.01)
    assert gvsl["misalignment_recovered_low"] < expected < gvsl["misalignment_recovered_high"]
    assert gvsl["misalignment_affine_gain"] == pytest.approx(100 * (0.6 - 0.35), abs=0.01)
    assert gvsl["misalignment_translation_r"] == pytest.approx(1.0)
    assert (gvsl["misalignment_error_identity"], gvsl["misalignment_error_affine"]) == (
        5.0,
        pytest.approx(1.73, abs=0.01),
    )


def test_figure7_has_one_tsne_panel_per_method():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 3], 12)
    features = {
        m: (rng.standard_normal((36, 4)).astype(np.float32) + labels[:, None], labels) for m in ("scratch", "gvsl")
    }
    fig = report.figure7_tsne(features, ["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["scratch", "whole GVSL"]
    assert len(fig.axes[0].collections[0].get_offsets()) == 36


# ------------------------------------------------------------------------------------------ registration


def tiny_dataset(root, shape=(16, 16, 16)):
    rng = np.random.default_rng(0)
    writer = DatasetWriter(root, "SHC")
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))
    for index in range(3):
        centre = rng.uniform(6, 10, size=(3, 1, 1, 1))
        label = (np.sqrt(((grid - centre) ** 2).sum(0)) < 4).astype(np.uint8)
        image = (0.2 + 0.5 * label + 0.05 * rng.standard_normal(shape)).astype(np.float32)
        writer.add(f"case{index}", "val" if index else "train", image, np.eye(4), label=label)
    writer.finish(
        DatasetInfo(task="SHC", classes=("blob",), spacing=(1.0, 1.0, 1.0), source="unit-test", window={"kind": "none"})
    )
    return root


def save_model(path, **switches):
    config = GVSLConfig(channels=TINY_CHANNELS, affine_channels=8, local_head_channels=8, **switches)
    torch.save(
        {
            "format": PRETRAIN_STATE_FORMAT,
            "model_config": config.to_dict(),
            "model": GVSL.from_config(config).state_dict(),
        },
        path,
    )
    return path


def reference_ncc_loss(pred, target, window=9):
    """Local NCC loss from box sums with zero padding, in float64 (independent of the torch code)."""
    n = window**3

    def box_sum(a):
        return ndimage.uniform_filter(a, size=window, mode="constant") * n

    p, t = pred.astype(np.float64), target.astype(np.float64)
    cross = box_sum(p * t) - box_sum(p) * box_sum(t) / n
    p_var = box_sum(p * p) - box_sum(p) ** 2 / n
    t_var = box_sum(t * t) - box_sum(t) ** 2 / n
    return 1 - np.mean(cross**2 / (p_var * t_var + 1e-5))


def test_registration_example_warps_one_heldout_case_onto_another(tmp_path):
    data = tiny_dataset(tmp_path / "SHC")
    example = registration_example(save_model(tmp_path / "checkpoint.pt"), data)
    assert example["ids"] == ["case1", "case2"]
    assert example["fixed"].shape == example["warped"].shape == (16, 16, 16)
    assert example["ddf"].shape == (3, 16, 16, 16)
    assert example["ncc_before"] == pytest.approx(reference_ncc_loss(example["moving"], example["fixed"]), abs=1e-4)
    assert example["ncc_after"] == pytest.approx(reference_ncc_loss(example["warped"], example["fixed"]), abs=1e-4)
    fig = report.figure_registration(example)
    assert len(fig.axes) == 7  # six panels and the DVF colour bar
    assert "NCC" in fig.axes[3].get_title()
    # labels: the moving labels warped by the returned field (a fresh head is the identity here)
    np.testing.assert_array_equal(example["warped_label"], example["moving_label"])
    assert example["dice_before"] == pytest.approx(example["dice_after"])
    reference = (
        2
        * np.sum((example["moving_label"] == 1) & (example["fixed_label"] == 1))
        / (np.sum(example["moving_label"] == 1) + np.sum(example["fixed_label"] == 1))
    )
    assert example["dice_before"] == pytest.approx(100 * reference)
    assert "Dice" in fig.axes[2].get_title()


def test_registration_needs_a_zmatching_checkpoint(tmp_path):
    data = tiny_dataset(tmp_path / "SHC")
    restoration_only = save_model(tmp_path / "no_zmatch.pt", affine=False, deformable=False)
    with pytest.raises(GVSLInputError, match="no Z-matching head"):
        registration_example(restoration_only, data)
    torch.save({"state_dict": {}}, tmp_path / "backbone.pt")
    with pytest.raises(GVSLInputError, match="expecting a pre-training checkpoint"):
        registration_example(tmp_path / "backbone.pt", data)
    with pytest.raises(GVSLInputError, match="two different cases"):
        registration_example(save_model(tmp_path / "gvsl.pt"), data, ids=["case1", "case1"])


# ------------------------------------------------------------------------------------------------ HTML


def test_every_number_names_its_seeds_and_commit(summaries):
    sourced = report.with_sources(report.table1(summaries, profile="unit"), summaries)
    gvsl_ccc = sourced[(sourced.method == "gvsl") & (sourced.task == "CCC")].iloc[0]
    assert (gvsl_ccc.runs, gvsl_ccc.commit, gvsl_ccc.dataset) == ("p0-t0, p1-t1", "def5678", "phantom-ct")


def test_html_page_holds_tables_figures_and_provenance(tmp_path, summaries):
    table = report.table1(summaries, profile="unit")
    facts = report.provenance(summaries, compose({"profile": "unit"}))
    page = report.write_html(
        tmp_path / "report.html",
        report.with_sources(table, summaries),
        report.table1_markdown(table),
        {"fig6_validation": "figures/fig6_validation.png"},
        facts,
    ).read_text()
    assert page.count("<table") == 4  # paper layout, gains, provenance, every number with its sources
    with_pretext = report.write_html(
        tmp_path / "pretext.html",
        report.with_sources(table, summaries),
        report.table1_markdown(table),
        {},
        facts,
        pretext={"gvsl": {"identity_dice": 55.0, "warped_dice": 61.25}},
    ).read_text()
    assert with_pretext.count("<table") == 5 and "<td>61.25</td>" in with_pretext
    assert "<td>70.0 ± 10.0 (paper 68.4)</td>" in page
    assert '<img src="figures/fig6_validation.png"' in page
    assert "<td>def5678</td>" in page and "<td>p0-t0, p1-t1, p2-t2</td>" in page


def test_the_page_opens_on_a_summary_and_shows_empty_cells_and_counts_plainly(tmp_path, summaries):
    table = report.table1(summaries, profile="unit")
    facts = report.provenance(summaries, compose({"profile": "unit", "pretrain": {"seeds": [0, 1]}}))
    found = report.claims(table, summaries)
    page = report.write_html(
        tmp_path / "report.html",
        report.with_sources(table, summaries),
        report.table1_markdown(table),
        {},
        facts,
        pretext={
            "gvsl": {"seeds": 5.0, "warped_dice": 21.0},
            "no_affine": {"seeds": float("nan"), "warped_dice": 20.0},
        },
        claims=found,
    ).read_text()
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Table 1</h2>")
    tested = int(found["tested"].sum())
    assert f"<b>{int(found['shown'].sum())} of {tested}</b> tested claims are shown" in page
    # a count reads as an integer, a missing one as "—", never NaN or <NA>
    assert "<td>5</td>" in page and "<td>5.0</td>" not in page
    assert "NaN" not in page and "&lt;NA&gt;" not in page and "—" in page
    # settings are table rows, not JSON
    assert "<th>pre-training.seeds</th><td><code>0, 1</code></td>" in page
    assert "<th>pre-training.options</th><td><code>—</code></td>" in page


def test_claims_follow_their_fixed_criteria(tmp_path):
    root = tmp_path / "transfer"
    write_summary(root, "SHC", "linear", "scratch", [0.20, 0.30, 0.25, 0.20, 0.30])
    write_summary(root, "SHC", "linear", "gvsl", [0.60, 0.70, 0.65, 0.60, 0.70])
    # above whole GVSL
    write_summary(root, "SHC", "linear", "no_affine", [0.65, 0.75, 0.70, 0.65, 0.75], converged=False)
    write_summary(root, "SHC", "finetune", "scratch", [0.80] * 5)
    write_summary(root, "SHC", "finetune", "gvsl", [0.82, 0.84, 0.83, 0.82, 0.84])
    summaries = report.load_summaries(root)
    found = report.claims(report.table1(summaries, profile="unit"), summaries).set_index("claim")
    assert list(found.reset_index().columns) == report.CLAIMS_COLUMNS
    linear = found.loc["GVSL beats scratch on linear probes"]
    assert (linear.task, linear.estimate, linear.shown, linear.converged) == ("SHC", pytest.approx(40.0), True, True)
    assert (linear.low_adj, linear.high_adj, linear.p_holm, linear.seeds) == (
        pytest.approx(40.0),
        pytest.approx(40.0),
        pytest.approx(0.0, abs=1e-12),
        5,
    )
    ablation = found.loc["whole GVSL beats w/o Affine head (linear)"]
    assert ablation.estimate == pytest.approx(-5.0) and not ablation.shown and not ablation.converged
    # the fine-tune claim is the linear gain minus the fine-tune gain, paired per seed: 40 - 3
    finetune = found.loc[report.FINETUNE_CLAIM]
    assert finetune.estimate == pytest.approx(37.0) and finetune.low > 0 and finetune.shown and finetune.tested
    markdown = report.claims_markdown(found.reset_index())
    assert (
        "| GVSL beats scratch on linear probes | SHC | +40.0 [+40.0, +40.0] | [+40.0, +40.0] (98.33 %) | < 0.001 "
        "| yes | **shown** |" in markdown
    )
    assert "not shown" in markdown and "Holm" in markdown
    # fine-tune claims can be left untested (fixed-budget cells): never shown, not counted by Holm
    untested = report.claims(report.table1(summaries, profile="unit"), summaries, finetune_claims=False)
    row = untested.set_index("claim").loc[report.FINETUNE_CLAIM]
    assert not row.tested and not row.shown and "finetune_claims" in row.note and math.isnan(row.p_holm)
    assert untested.loc[untested.tested, "level_adj"].max() == pytest.approx(1 - 0.05 / 2)  # two tested claims


def test_claims_are_corrected_for_multiplicity(tmp_path):
    """A gain whose own 95 % interval excludes 0 is not shown once Holm's correction counts a second claim."""
    root = tmp_path / "transfer"
    write_summary(root, "SHC", "linear", "scratch", [0.20] * 5)
    write_summary(root, "SHC", "linear", "gvsl", [0.21, 0.23, 0.22, 0.24, 0.205])
    write_summary(root, "SHC", "linear", "no_affine", [0.20, 0.25, 0.18, 0.23, 0.21])
    summaries = report.load_summaries(root)
    found = report.claims(report.table1(summaries, profile="unit"), summaries).set_index("claim")
    linear = found.loc["GVSL beats scratch on linear probes"]
    other = found.loc["whole GVSL beats w/o Affine head (linear)"]
    assert linear.low > 0 and linear.p < 0.05 and other.p > 0.05
    assert linear.p_holm == pytest.approx(min(1.0, 2 * linear.p)) and linear.p_holm > 0.05
    assert linear.low_adj < 0 < linear.high_adj and not linear.shown


def test_claims_need_five_seeds(tmp_path):
    root = tmp_path / "transfer"
    write_summary(root, "SHC", "linear", "scratch", [0.20, 0.30])
    write_summary(root, "SHC", "linear", "gvsl", [0.60, 0.70])
    summaries = report.load_summaries(root)
    found = report.claims(report.table1(summaries, profile="unit"), summaries)
    row = found.iloc[0]
    assert row.estimate == pytest.approx(40.0) and not row.tested and not row.shown and math.isnan(row.low)
    assert "2 pre-training seed(s), fewer than 5" in row.note
    assert (
        "| GVSL beats scratch on linear probes | SHC | +40.0 no interval | – | – | yes | not tested: 2 "
        in report.claims_markdown(found)
    )


def test_every_figure_the_report_stage_writes_has_a_caption():
    import yaml

    from gvsl.report.page import FIGURE_CAPTIONS, FIGURE_FOLDER
    from tests.test_pipeline import ROOT

    outs = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["outs"]
    folders = [next(iter(out)) for out in outs if isinstance(out, dict) and "figures" in next(iter(out))]
    # one folder holds them all, so dvc.yaml lists no figure by name
    assert folders == [f"results/{FIGURE_FOLDER}"]
    assert FIGURE_CAPTIONS


def test_label_efficiency_rows_intervals_and_gains_per_fraction(tmp_path):
    root = tmp_path / "transfer"
    for fraction, shift in ((0.25, 0.0), (1.0, 0.2)):
        write_summary(root, "SHC", "linear", "scratch", [0.20 + shift, 0.30 + shift] * 3, fraction=fraction)
        write_summary(root, "SHC", "linear", "gvsl", [0.50 + shift, 0.60 + shift] * 3, fraction=fraction)
    write_summary(root, "SHC", "finetune", "scratch", [0.7] * 6)  # one fraction only: no curve
    table1_rows = report.load_summaries(root)
    assert set(table1_rows["fraction"]) == {1.0} and len(table1_rows) == 3  # Table 1 reads the full fractions
    efficiency = report.label_efficiency(report.load_summaries(root, label_fractions=True))
    assert list(efficiency.columns) == report.LABEL_EFFICIENCY_COLUMNS
    assert list(zip(efficiency["method"], efficiency["fraction"])) == [
        ("scratch", 0.25),
        ("scratch", 1.0),
        ("gvsl", 0.25),
        ("gvsl", 1.0),
    ]
    gvsl_quarter = efficiency.iloc[2]
    assert gvsl_quarter["value"] == pytest.approx(55.0) and gvsl_quarter["gain"] == pytest.approx(30.0)
    assert gvsl_quarter["labelled_cases"] == 2 and efficiency.iloc[3]["labelled_cases"] == 8
    # six pre-training seeds: an interval, Table 1's (its coverage is tests/test_stats.py's), around the mean
    assert gvsl_quarter["low"] < 55.0 < gvsl_quarter["high"]
    from gvsl.stats import jackknife_scores, seed_case_interval, weighted_mean_dice

    runs = [np.full((5, 1), t) for t in [0.5, 0.6] * 3]  # per case, the Dice of its one class
    _, full, deleted = jackknife_scores(runs, weighted_mean_dice, list(range(6)))
    expected = seed_case_interval(full, deleted)
    assert (gvsl_quarter["low"], gvsl_quarter["high"]) == pytest.approx((100 * expected.low, 100 * expected.high))
    assert efficiency.loc[efficiency["method"] == "scratch", "gain"].isna().all()
    figure = report.figure_label_efficiency(efficiency)
    assert len(figure.axes[0].lines) == 2


def test_jackknife_scores_are_the_gains_over_a_baseline_that_scores_zero():
    from gvsl.stats import jackknife_gains, jackknife_scores, weighted_mean_dice

    rng = np.random.default_rng(0)
    runs = [rng.uniform(0.2, 0.9, (7, 2)) for _ in range(6)]  # per case, the Dice of two classes
    seeds = [0, 0, 1, 1, 2, 2]
    scores = jackknife_scores(runs, weighted_mean_dice, seeds)
    gains = jackknife_gains(runs, [np.zeros((7, 2))] * 6, weighted_mean_dice, seeds)
    assert scores[0] == gains[0] and np.allclose(scores[1], gains[1]) and np.allclose(scores[2], gains[2])
