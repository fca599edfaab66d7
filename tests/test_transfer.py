"""Transfer protocols: metrics against hand-computed values, best-on-validation, linear vs fine-tune, misuse."""

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import gvsl.transfer as transfer
import gvsl.transfer.metrics as metrics
import gvsl.transfer.train as transfer_train
from gvsl.errors import GVSLInputError
from gvsl.nets import UNet3D
from gvsl.transfer import (
    Case,
    TransferConfig,
    TransferModel,
    build_transfer_model,
    evaluate_classification,
    evaluate_segmentation,
    extract_local_features,
    run_transfer,
)

TINY = (8, 16, 16, 16, 16, 16, 16, 8, 8)
SIZE = 24
CROP = (16, 16, 16)


def tiny_backbone(seed=0):
    torch.manual_seed(seed)
    return UNet3D(1, TINY)


def phantom(seed, size=SIZE):
    """A 24³ volume: a ball of class 1 (intensity 1) and a cube of class 2 (intensity -1) on a 0 background."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(size)] * 3, indexing="ij")
    label = np.zeros((size,) * 3, np.uint8)
    ball, cube = rng.integers(6, 10, 3), rng.integers(14, 18, 3)
    label[(z - ball[0]) ** 2 + (y - ball[1]) ** 2 + (x - ball[2]) ** 2 < 16] = 1
    label[(abs(z - cube[0]) < 4) & (abs(y - cube[1]) < 4) & (abs(x - cube[2]) < 4)] = 2
    noise = 0.1 * rng.standard_normal(label.shape)
    image = (np.choose(label, [0.0, 1.0, -1.0]) + noise).astype(np.float32)
    return Case(f"subject{seed}", image, label)


def seg_config(**overrides):
    values = dict(
        task="segmentation",
        protocol="linear",
        num_classes=3,
        iterations=6,
        val_every=3,
        crop=CROP,
        lr=1e-2,
        device="cpu",
    )
    values.update(overrides)
    return TransferConfig(**values)


SPLITS = ([phantom(i) for i in range(3)], [phantom(3), phantom(4)], [phantom(5)])


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def linear_run():
    backbone = tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = run_transfer(backbone, *SPLITS, seg_config(), progress=False)
    return backbone, before, result


@pytest.fixture(scope="module")
def finetune_run():
    backbone = tiny_backbone()
    config = seg_config(protocol="finetune", iterations=40, val_every=10, lr=3e-3)
    return backbone, run_transfer(backbone, *SPLITS, config, progress=False)


# ------------------------------------------------------------------------------------------ metrics


class FixedSegmentation(TransferModel):
    """Predicts a stored label map (as large one-hot logits) whatever the input."""

    def __init__(self, prediction: np.ndarray, num_classes: int):
        super().__init__(UNet3D(1, TINY), "segmentation", num_classes, frozen=True)
        self.prediction = torch.as_tensor(prediction.astype(np.int64))

    def forward(self, x):
        logits = torch.nn.functional.one_hot(self.prediction, self.head.out_channels).permute(3, 0, 1, 2).float()
        return 20 * logits[None].expand(x.shape[0], -1, -1, -1, -1)


def hand_dice(pred, truth, c):
    p, t = pred == c, truth == c
    if p.sum() + t.sum() == 0:
        return math.nan
    return 2 * (p & t).sum() / (p.sum() + t.sum())


def test_dice_matches_hand_computed_values_and_skips_empty_vs_empty():
    image = np.zeros((4, 4, 4), np.float32)
    truth_a = np.zeros((4, 4, 4), np.uint8)
    truth_a[:2] = 1  # 32 voxels of class 1, no class 2
    pred_a = np.zeros_like(truth_a)
    pred_a[:1] = 1  # 16 of them found: Dice 2·16/(16+32) = 2/3; class 2 empty in both: not scored
    truth_b = np.zeros_like(truth_a)
    truth_b[:2, :2, :] = 2  # 16 voxels of class 2, no class 1
    pred_b = np.zeros_like(truth_a)
    pred_b[:2, :2, :2] = 2  # 8 of them
    pred_b[3, 3, :] = 2  # and 4 false positives: Dice 2·8/(12+16) = 4/7
    pred_b[2, 2, 2] = 1  # class 1 predicted but absent: Dice 0

    results = []
    for pred, truth in ((pred_a, truth_a), (pred_b, truth_b)):
        model = FixedSegmentation(pred, 3)
        results.append(evaluate_segmentation(model, [Case("c", image, truth)], roi=(4, 4, 4), overlap=0.25))
        assert hand_dice(pred, truth, 1) == pytest.approx(results[-1]["dice/1"], nan_ok=True)

    assert results[0]["dice/1"] == pytest.approx(2 / 3)
    assert math.isnan(results[0]["dice/2"])  # not 0 (MONAI's aggregate) nor 1 (ignore_empty=False)
    assert results[0]["mean_dice"] == pytest.approx(2 / 3)
    assert results[1] == pytest.approx({"dice/1": 0.0, "dice/2": 4 / 7, "mean_dice": 2 / 7})


def test_dice_averages_each_class_over_the_cases_where_it_is_scored():
    image = np.zeros((4, 4, 4), np.float32)
    truth = [np.zeros((4, 4, 4), np.uint8) for _ in range(2)]
    truth[0][:2] = 1
    truth[1][:2] = 1
    truth[1][3] = 2
    pred = truth[0]  # both cases: class 1 perfect; class 2 empty-vs-empty in case a, missed in case b
    model = FixedSegmentation(pred, 3)
    cases = [Case("a", image, truth[0]), Case("b", image, truth[1])]
    out = evaluate_segmentation(model, cases, roi=(4, 4, 4), class_names=["background", "ball", "cube"])
    # ball: (1 + 1) / 2; cube: scored in case b only (0), case a is empty-vs-empty.
    assert out == pytest.approx({"dice/ball": 1.0, "dice/cube": 0.0, "mean_dice": 0.5})


def test_evaluation_stacks_cases_of_one_shape_without_changing_any_score(monkeypatch):
    # A real network, so that batch mates could leak into each other (they must not: GroupNorm, eval()).
    # Shapes 24, 24, 24, 20, 24 in one 24³ window: runs of one shape are stacked, in order, at most
    # sw_batch_size at a time; with 16³ windows every case goes alone.
    cases = [phantom(i) for i in range(3)] + [phantom(3, size=20), phantom(4)]
    model = build_transfer_model(tiny_backbone(), seg_config()).eval()
    whole = (SIZE,) * 3
    alone = torch.cat([metrics.segmentation_case_scores(model, [case], whole, sw_batch_size=1)[1] for case in cases])
    assert len({tuple(row.tolist()) for row in alone}) == len(cases)  # distinct: a swap or a mix would show
    stacks = []
    sliding_window = metrics.sliding_window_inference
    monkeypatch.setattr(
        metrics,
        "sliding_window_inference",
        lambda inputs, **kw: stacks.append(len(inputs)) or sliding_window(inputs, **kw),
    )
    ids, batched = metrics.segmentation_case_scores(model, cases, whole, sw_batch_size=2)
    assert ids == [case.id for case in cases] and stacks == [2, 1, 1, 1]
    torch.testing.assert_close(batched, alone, equal_nan=True)
    stacks.clear()
    metrics.segmentation_case_scores(model, cases, CROP, sw_batch_size=2)
    assert stacks == [1] * len(cases)

    # centre-cropped to the training crop first: the 20³ case joins the 24³ ones in one stack of four
    classifier = build_transfer_model(tiny_backbone(), seg_config(task="classification", num_classes=1)).eval()
    cases = [Case(case.id, case.image, None, i % 2) for i, case in enumerate(cases)]
    ids, probabilities, _ = metrics.classification_probabilities(classifier, cases, crop=CROP)
    assert ids == [case.id for case in cases]
    with torch.no_grad():
        one_by_one = torch.cat(
            [
                torch.sigmoid(classifier(metrics._center_crop(torch.as_tensor(case.image), CROP)[None, None])).reshape(
                    1
                )
                for case in cases
            ]
        )
    assert len(set(one_by_one.tolist())) == len(cases)
    torch.testing.assert_close(probabilities, one_by_one, rtol=1e-5, atol=1e-6)


class FixedScore(TransferModel):
    """Classification logit = the mean intensity of the input."""

    def __init__(self):
        super().__init__(UNet3D(1, TINY), "classification", 1, frozen=True)

    def forward(self, x):
        return x.mean(dim=(1, 2, 3, 4))[:, None]


def test_auc_matches_pair_counting_and_sklearn():
    logits = [-2.0, 0.5, 1.0, -0.5, 2.0, 0.0]
    targets = [0, 0, 1, 0, 1, 1]
    cases = [
        Case(f"c{i}", np.full((8, 8, 8), s, np.float32), target=t) for i, (s, t) in enumerate(zip(logits, targets))
    ]
    # Positives {1.0, 2.0, 0.0} vs negatives {-2.0, 0.5, -0.5}: 3 + 3 + 2 of 9 pairs ranked right.
    auc = evaluate_classification(FixedScore(), cases, crop=(4, 4, 4))["auc"]
    assert auc == pytest.approx(8 / 9)
    assert auc == pytest.approx(roc_auc_score(targets, logits))


def test_auc_with_one_target_is_an_error():
    cases = [Case(f"c{i}", np.zeros((8, 8, 8), np.float32), target=1) for i in range(3)]
    with pytest.raises(GVSLInputError, match="both targets"):
        evaluate_classification(FixedScore(), cases)


# ------------------------------------------------------------------------------------------ training


def test_best_validation_iteration_is_kept_ties_keep_the_earliest(monkeypatch):
    scripted = iter([math.nan, 0.5, 0.5, 0.3])
    snapshots = {}

    def fake_validate(model, cases, config):
        iteration = (len(snapshots) + 1) * config.val_every
        snapshots[iteration] = {k: v.clone() for k, v in model.state_dict().items()}
        return next(scripted)

    monkeypatch.setattr(transfer_train, "validate", fake_validate)
    result = run_transfer(tiny_backbone(), *SPLITS, seg_config(iterations=8, val_every=2), progress=False)
    assert [it for it, _ in result.val_curve] == [2, 4, 6, 8]
    assert result.best_iteration == 4 and result.best_val_metric == 0.5
    assert states_equal(result.model.state_dict(), snapshots[4])
    assert not states_equal(snapshots[4], snapshots[8])


def test_a_run_stops_when_its_validation_curve_plateaus(monkeypatch):
    scripted = iter([0.1, 0.3, 0.5, 0.505, 0.507, 0.508, 0.9, 0.9])
    monkeypatch.setattr(transfer_train, "validate", lambda model, cases, config: next(scripted))
    config = seg_config(iterations=16, val_every=2, stop_on_plateau=True, min_iterations=4)
    result = run_transfer(tiny_backbone(), *SPLITS, config, progress=False)
    # at 12: the last 3 validations (8, 10, 12) added 0.008 < 0.01 to the best before them
    assert [it for it, _ in result.val_curve] == [2, 4, 6, 8, 10, 12]
    assert result.iterations == 12 and result.converged and result.best_iteration == 12
    assert len(result.train_loss) == 12


def test_without_stopping_a_run_still_says_whether_it_plateaued(monkeypatch):
    rising = iter([0.1, 0.2, 0.3, 0.4])
    monkeypatch.setattr(transfer_train, "validate", lambda model, cases, config: next(rising))
    result = run_transfer(tiny_backbone(), *SPLITS, seg_config(iterations=8, val_every=2), progress=False)
    assert result.iterations == 8 and not result.converged


@pytest.mark.parametrize(
    "curve, reached",
    [
        ([(100, 0.2), (200, 0.4), (300, 0.45), (400, 0.455), (500, 0.457), (600, 0.458)], True),
        ([(100, 0.2), (200, 0.4), (300, 0.45), (400, 0.47), (500, 0.49), (600, 0.51)], False),  # still rising
        ([(100, 0.0), (200, 0.0), (300, 0.0), (400, 0.0)], False),  # flat from the start: never began to learn
        ([(100, 0.2), (200, 0.5), (300, 0.5)], False),  # three recent validations leave nothing before them
        ([(100, 0.2), (200, 0.5), (300, 0.5), (400, 0.5), (500, math.nan)], False),  # NaN last score
        ([(100, 0.2), (200, math.nan), (300, 0.5), (400, 0.5), (500, 0.5), (600, 0.5)], True),  # NaN is no score
    ],
)
def test_plateau_rule(curve, reached):
    assert transfer.PlateauRule(window=0.25, min_delta=0.01).reached(curve) is reached


def test_a_probe_whose_first_validation_is_its_best_plateaus_without_the_rise():
    peaked_first = [
        (50, 0.39),
        (100, 0.33),
        (150, 0.33),
        (200, 0.36),
        (250, 0.36),
        (300, 0.36),
        (350, 0.36),
        (400, 0.36),
    ]
    assert not transfer.PlateauRule(min_iterations=400).reached(peaked_first)
    assert transfer.PlateauRule(min_iterations=400, needs_rise=False).reached(peaked_first)
    still_rising = [(i, 0.1 + 0.02 * k) for k, i in enumerate(range(50, 450, 50))]
    assert not transfer.PlateauRule(min_iterations=400, needs_rise=False).reached(still_rising)
    config = transfer.TransferConfig("classification", "linear", 1, plateau_needs_rise=False)
    assert config.plateau.needs_rise is False


def test_plateau_rule_waits_for_min_iterations_and_looks_back_over_the_window():
    flat = [(i, 0.5 if i > 100 else 0.1) for i in range(100, 2100, 100)]
    assert not transfer.PlateauRule(min_iterations=3000).reached(flat)
    assert transfer.PlateauRule().reached(flat)
    # a rise at 1600 lies within the last 25 % of 2000 iterations: not plateaued yet
    late = [(i, s + (0.05 if i >= 1600 else 0.0)) for i, s in flat]
    assert not transfer.PlateauRule().reached(late)


def test_validation_also_runs_after_the_last_iteration(monkeypatch):
    monkeypatch.setattr(transfer_train, "validate", lambda model, cases, config: 0.0)
    result = run_transfer(tiny_backbone(), *SPLITS, seg_config(iterations=7, val_every=3), progress=False)
    assert [it for it, _ in result.val_curve] == [3, 6, 7]
    assert result.best_iteration == 3


def test_linear_protocol_leaves_the_backbone_bit_identical(linear_run):
    backbone, before, result = linear_run
    assert states_equal(backbone.state_dict(), before)  # the caller's module
    assert states_equal(result.model.backbone.state_dict(), before)  # the trained copy
    assert not any(p.requires_grad for p in result.model.backbone.parameters())
    model = result.model.train()
    assert model.training and not model.backbone.training
    head_init = build_transfer_model(backbone, seg_config()).head.state_dict()
    assert not states_equal(result.model.head.state_dict(), head_init)


def test_finetune_changes_every_backbone_parameter(finetune_run):
    backbone, result = finetune_run
    original = dict(backbone.named_parameters())
    for name, trained in result.model.backbone.named_parameters():
        assert not torch.equal(trained, original[name]), name


def test_finetune_learns_a_separable_segmentation(finetune_run):
    _, result = finetune_run
    # A blind guess scores the structures' voxel fraction (~0.02-0.03); the phantom is easy.
    assert result.test["mean_dice"] > 0.5
    assert result.best_val_metric == max(score for _, score in result.val_curve)
    assert result.test == pytest.approx(evaluate_segmentation(result.model, SPLITS[2], CROP, 0.25))


def test_runs_are_deterministic(linear_run):
    backbone, _, first = linear_run
    again = run_transfer(backbone, *SPLITS, seg_config(), progress=False)
    assert again.val_curve == first.val_curve and again.test == first.test
    assert again.train_loss == first.train_loss
    assert states_equal(again.model.state_dict(), first.model.state_dict())
    other_seed = run_transfer(backbone, *SPLITS, seg_config(seed=1), progress=False)
    assert other_seed.train_loss != first.train_loss


def test_dice_ce_loss_is_the_sum_of_its_terms():
    first_loss = {
        loss: run_transfer(
            tiny_backbone(), *SPLITS, seg_config(iterations=1, seg_loss=loss), progress=False
        ).train_loss[0]
        for loss in ("dice", "ce", "dice_ce")
    }
    # Same seed: same first crop and head, so the terms add up exactly.
    assert first_loss["dice_ce"] == pytest.approx(first_loss["dice"] + first_loss["ce"], rel=1e-6)
    assert 0 < first_loss["dice"] < 1


def test_classification_run_reports_an_auc():
    rng = np.random.default_rng(0)

    def case(i, target):
        image = rng.standard_normal((SIZE,) * 3).astype(np.float32) + (0.5 if target else 0.0)
        return Case(f"c{i}", image, target=target)

    train = [case(i, i % 2) for i in range(4)]
    val, test = [case(4, 0), case(5, 1)], [case(6, 1), case(7, 0), case(8, 1)]
    config = TransferConfig("classification", "finetune", 1, iterations=4, val_every=2, crop=CROP, device="cpu")
    result = run_transfer(tiny_backbone(), train, val, test, config, progress=False)
    assert result.metric_name == "auc" and 0.0 <= result.test["auc"] <= 1.0
    assert result.test == evaluate_classification(result.model, test, CROP)
    assert result.model.head.in_features == TINY[4]


def test_dvclive_logs_loss_per_iteration_and_validation_curve(tmp_path):
    config = seg_config(iterations=4, val_every=2)
    result = run_transfer(tiny_backbone(), *SPLITS, config, log_dir=tmp_path / "live", progress=False)
    metrics = tmp_path / "live" / "plots" / "metrics"
    loss = pd.read_csv(metrics / "train" / "loss.tsv", sep="\t")
    val = pd.read_csv(metrics / "val" / "mean_dice.tsv", sep="\t")
    assert loss["step"].tolist() == [1, 2, 3, 4]
    assert loss["loss"].tolist() == pytest.approx(result.train_loss)
    assert val["step"].tolist() == [it for it, _ in result.val_curve]
    assert val["mean_dice"].tolist() == pytest.approx([score for _, score in result.val_curve])
    assert (tmp_path / "live" / "metrics.json").read_text().count("mean_dice") >= 2  # val and test


# ------------------------------------------------------------------------------------------ misuse


@pytest.mark.parametrize(
    "splits, config, message",
    [
        ((SPLITS[0], [], SPLITS[2]), seg_config(), "empty validation split"),
        (
            (SPLITS[0], SPLITS[1], SPLITS[2]),
            seg_config(crop=(32, 16, 16)),
            r"'subject0'.*\(32, 16, 16\).*\(24, 24, 24\)",
        ),
        (
            ([Case("bad", np.zeros((8,) * 3, np.float32), np.full((8,) * 3, 5, np.uint8))], SPLITS[1], SPLITS[2]),
            seg_config(crop=(8, 8, 8)),
            r"'bad'.*\[5\]",
        ),
        (([Case("nolabel", np.zeros((8,) * 3, np.float32))], SPLITS[1], SPLITS[2]), seg_config(), "'nolabel'.*label"),
        (
            (
                [Case("notarget", np.zeros((8,) * 3, np.float32))],
                [Case("v", np.zeros((8,) * 3, np.float32), target=1)],
                SPLITS[2],
            ),
            TransferConfig("classification", "linear", 1, device="cpu"),
            "'notarget'.*target",
        ),
        (
            (
                [Case("t", np.zeros((8,) * 3, np.float32), target=0)],
                [Case(f"v{i}", np.zeros((8,) * 3, np.float32), target=1) for i in range(2)],
                [Case("s", np.zeros((8,) * 3, np.float32), target=0)],
            ),
            TransferConfig("classification", "linear", 1, device="cpu"),
            "validation split.*both targets",
        ),
    ],
)
def test_misuse_is_a_clear_error(splits, config, message):
    with pytest.raises(GVSLInputError, match=message):
        run_transfer(tiny_backbone(), *splits, config, progress=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(task="detection"), "task"),
        (dict(protocol="partial"), "protocol"),
        (dict(num_classes=1), "num_classes"),
        (dict(task="classification", num_classes=2), "num_classes"),
        (dict(seg_loss="focal"), "seg_loss"),
        (dict(sw_overlap=1.0), "sw_overlap"),
        (dict(iterations=0), "iterations"),
        (dict(class_weighting="median"), "class_weighting"),
        (dict(plateau_window=1.0), "plateau_window"),
        (dict(plateau_delta=-0.1), "plateau_delta"),
        (dict(min_iterations=7), r"min_iterations \(7\) exceeds iterations \(6\)"),
    ],
)
def test_bad_settings_are_rejected(overrides, message):
    with pytest.raises(GVSLInputError, match=message):
        seg_config(**overrides)


def test_per_case_scores_keep_unscored_classes_and_reproduce_the_mean_dice():
    """The per-case Dice that Table 1's intervals resample must give back the table's mean Dice."""
    from gvsl.stats import weighted_mean_dice
    from gvsl.transfer import evaluate_cases

    image = np.zeros((4, 4, 4), np.float32)
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[:2] = 1  # class 2 absent from truth and prediction: not scored
    pred = np.zeros_like(truth)
    pred[:1] = 1
    other_truth = truth.copy()
    other_truth[3] = 2
    model = FixedSegmentation(pred, 3)
    config = seg_config(crop=(4, 4, 4))
    metrics, per_case = evaluate_cases(model, [Case("a", image, truth), Case("b", image, other_truth)], config)
    assert per_case["ids"] == ["a", "b"]
    assert math.isnan(per_case["dice"][0][1])  # kept NaN, not the 0 MONAI's reduction writes in place
    assert weighted_mean_dice(np.array(per_case["dice"]), np.ones((1, 2)))[0] == pytest.approx(metrics["mean_dice"])


def test_class_weights_are_inverse_frequencies():
    label = torch.tensor([0] * 6 + [1] * 2 + [2] * 1)
    case = transfer._Prepared("c", torch.zeros(1, 9, 1, 1), label.reshape(9, 1, 1), None)
    with pytest.warns(UserWarning, match=r"\[3\]"):
        weights = transfer._class_weights([case], 4)
    # total / (num_classes · count): 9/24, 9/8, 9/4; class 3 never occurs.
    assert weights.tolist() == pytest.approx([9 / 24, 9 / 8, 9 / 4, 0.0])


# ------------------------------------------------------------------------------------------ features


def test_extract_local_features_samples_each_structure_up_to_the_cap():
    backbone = tiny_backbone()
    cases = [phantom(0), phantom(1)]
    counts = {c: sum(int((case.label == c).sum()) for case in cases) for c in (1, 2)}
    cap = 600  # above the ball's voxel count (2 × 251), below the cube's (2 × 343)
    assert counts[1] < cap < counts[2]
    features, labels = extract_local_features(backbone, cases, max_per_class=cap, seed=0, device="cpu")
    assert features.shape == (counts[1] + cap, TINY[8]) and features.dtype == np.float32
    assert labels.tolist() == [1] * counts[1] + [2] * cap

    # Every sampled vector is the backbone's local feature at some voxel of its class.
    with torch.no_grad():
        local = [backbone(torch.as_tensor(c.image)[None, None])[1][0].flatten(1).T.numpy() for c in cases]
    cube_voxels = np.concatenate([f[c.label.flatten() == 2] for f, c in zip(local, cases)])
    distance = np.abs(features[labels == 2][:, None] - cube_voxels[None]).max(-1).min(-1)
    assert distance.max() < 1e-5

    again, _ = extract_local_features(backbone, cases, max_per_class=cap, seed=0, device="cpu")
    other, _ = extract_local_features(backbone, cases, max_per_class=cap, seed=1, device="cpu")
    assert np.array_equal(again, features) and not np.array_equal(other, features)


def test_frozen_feature_cache_changes_no_number(monkeypatch):
    """Whole-volume crops turn the cache on for a linear probe; the run must match one without it."""
    train, val, test = [phantom(i, size=16) for i in range(3)], [phantom(3, size=16)], [phantom(4, size=16)]
    config = seg_config(iterations=5, val_every=2)
    cached = run_transfer(tiny_backbone(), train, val, test, config, progress=False)
    # at most one entry per distinct volume: 3 training (those drawn), 1 validation, 1 test
    assert cached.model.cache_features and 2 <= len(cached.model._features) <= 5

    def uncached(backbone, config, cache_features=False):
        return build_transfer_model(backbone, config)

    monkeypatch.setattr(transfer_train, "build_transfer_model", uncached)
    plain = run_transfer(tiny_backbone(), train, val, test, config, progress=False)
    assert not plain.model.cache_features
    assert states_equal(cached.model.head.state_dict(), plain.model.head.state_dict())
    assert cached.test == plain.test and cached.val_curve == plain.val_curve


def test_feature_cache_is_per_sample_within_a_batch():
    """A batch mixing seen and unseen volumes reuses the seen ones and returns the backbone's features."""
    backbone = tiny_backbone()
    model = TransferModel(copy.deepcopy(backbone), "segmentation", 3, frozen=True, cache_features=True)
    a, b, c = (torch.as_tensor(phantom(i, size=16).image)[None] for i in range(3))
    with torch.no_grad():
        model(torch.stack([a, b]))
        assert len(model._features) == 2
        logits = model(torch.stack([b, c, b]))
        assert len(model._features) == 3
        global_f, local_f = backbone(torch.stack([b, c, b]))
    torch.testing.assert_close(logits, model.head(local_f), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model._backbone_features(torch.stack([c]))[0], global_f[1:2], rtol=1e-4, atol=1e-5)


def test_feature_cache_needs_a_frozen_backbone():
    with pytest.raises(GVSLInputError, match="frozen"):
        TransferModel(tiny_backbone(), "segmentation", 3, frozen=False, cache_features=True)


def test_a_plateau_rule_that_cannot_fire_at_its_cap_is_refused():
    # validating every 20 up to 80 leaves the first score alone before the last three validations:
    # a plateau there would need the curve to have risen above it and not above it at once
    with pytest.raises(GVSLInputError, match="cannot fire within 80 iterations validated every 20"):
        seg_config(iterations=80, val_every=20, min_iterations=60, plateau_needs_rise=True, stop_on_plateau=True)
    assert not transfer.PlateauRule(min_iterations=60).can_fire(80, 20)
    assert transfer.PlateauRule(min_iterations=60, needs_rise=False).can_fire(80, 20)
    assert transfer.PlateauRule(min_iterations=60).can_fire(80, 10)


def _profile_caps():
    """(profile, protocol, task, TransferConfig settings) for every cap the two profiles run with."""
    from gvsl.pipeline import load_settings
    from gvsl.table1 import PROTOCOLS, TASKS

    root = Path(__file__).resolve().parents[1]
    for profile in ("params.yaml", "profiles/paper.yaml"):
        settings = load_settings(root / profile)
        for protocol in PROTOCOLS:
            runs = settings.transfer.protocol(protocol)
            for task in TASKS:
                yield pytest.param(
                    profile,
                    protocol,
                    task,
                    {
                        "iterations": runs.cap(task),
                        "val_every": runs.val_every,
                        "min_iterations": runs.min_iterations,
                        "plateau_window": runs.plateau_window,
                        "plateau_delta": runs.plateau_delta,
                        "plateau_needs_rise": runs.plateau_needs_rise,
                    },
                    id=f"{profile}-{protocol}-{task}",
                )


@pytest.mark.parametrize("profile, protocol, task, settings", list(_profile_caps()))
def test_the_plateau_rule_can_fire_at_every_cap_the_profiles_run_with(profile, protocol, task, settings):
    assert seg_config(**settings).plateau.can_fire(settings["iterations"], settings["val_every"])
    config = seg_config(**settings, stop_on_plateau=True)  # which refuses a rule that cannot fire
    cap = config.iterations
    validated = [*range(config.val_every, cap, config.val_every), cap]
    # a curve that rises from its first validation to its second and stays flat after it plateaus by the cap
    curve = [(iteration, 0.0 if k == 0 else 0.5) for k, iteration in enumerate(validated)]
    assert config.plateau.reached(curve), f"{profile}: {protocol} {task} cannot plateau by its cap {cap}"
    # and a curve still rising at the cap has not plateaued
    rising = [(iteration, 0.1 * k) for k, iteration in enumerate(validated)]
    assert not config.plateau.reached(rising)


def test_label_subsets_are_nested_seeded_and_keep_both_classes():
    from gvsl.transfer.cases import label_subset

    cases = [Case(f"c{i}", np.zeros((4, 4, 4), np.float32), target=int(i < 3)) for i in range(12)]
    subsets = {f: label_subset(cases, f, seed=5) for f in (0.1, 0.25, 0.5, 1.0)}
    ids = {f: [c.id for c in chosen] for f, chosen in subsets.items()}
    assert ids[1.0] == [c.id for c in cases]
    assert set(ids[0.1]) <= set(ids[0.25]) <= set(ids[0.5]) <= set(ids[1.0])  # nested
    assert all(ids[f] == sorted(ids[f], key=lambda i: int(i[1:])) for f in ids)  # in the cases' order
    assert [len(ids[f]) for f in (0.1, 0.25, 0.5)] == [2, 4, 7]  # ceil per class: of 3 of class 1, of 9 of class 0
    assert all({c.target for c in subsets[f]} == {0, 1} for f in subsets)  # both classes, however few
    assert ids[0.25] == [c.id for c in label_subset(cases, 0.25, seed=5)]  # seeded
    assert any(ids[0.25] != [c.id for c in label_subset(cases, 0.25, seed=s)] for s in range(6, 12))
    segmentation = [
        Case(f"s{i}", np.zeros((4, 4, 4), np.float32), label=np.zeros((4, 4, 4), np.uint8)) for i in range(8)
    ]
    assert len(label_subset(segmentation, 0.01, seed=0)) == 1  # at least one case
    with pytest.raises(GVSLInputError, match=r"label fraction must be in \(0, 1\], got 0"):
        label_subset(cases, 0, seed=0)
    with pytest.raises(GVSLInputError, match="label_fraction must be a fraction in"):
        TransferConfig("classification", "linear", 1, label_fraction=1.5)
