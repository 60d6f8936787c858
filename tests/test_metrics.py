"""ROC AUC, average precision and F1 against hand-computed values (scikit-learn's definitions)."""
from __future__ import annotations

import numpy as np
import pytest

from compress.metrics import average_precision, class_metrics, f1, roc_auc


def test_auc_counts_pairs_and_ties_count_half():
    # positives score 0.8, 0.4; negatives 0.6, 0.4, 0.1: pairs (p > n) = 3 of 6 plus the tie (0.4, 0.4) as
    # a half, 1 more pair (0.4 > 0.1): 0.8>0.6, 0.8>0.4, 0.8>0.1, 0.4=0.4 (half), 0.4>0.1 -> 4.5 / 6
    scores = np.array([0.8, 0.6, 0.4, 0.4, 0.1])
    pos = np.array([1, 0, 1, 0, 0], bool)
    assert roc_auc(scores, pos) == pytest.approx(4.5 / 6)
    assert roc_auc(scores, np.ones(5, bool)) is None


def test_average_precision_steps_at_each_distinct_threshold():
    # sklearn's doc example: y = [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8] -> AP 0.8333...
    assert average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == \
        pytest.approx(0.8333333333)
    # a tie holding one positive and one negative is one threshold: P = 1/2 at R = 1 -> AP 0.5
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0], bool)) == pytest.approx(0.5)


def test_f1_by_hand():
    pred = np.array([1, 1, 0, 1, 0], bool)
    true = np.array([1, 0, 0, 1, 1], bool)
    # tp 2, predicted 3, positive 3 -> 2 * 2 / 6
    assert f1(pred, true) == pytest.approx(4 / 6)
    assert f1(np.zeros(3, bool), np.zeros(3, bool)) == 0.0


def test_two_classes_report_the_positive_class_and_more_classes_the_macro_mean():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 0])
    m = class_metrics(probs, labels)
    assert m.averaging == "positive class (1)"
    assert m.auc == pytest.approx(roc_auc(probs[:, 1], labels == 1)) == pytest.approx(0.75)
    assert m.f1 == pytest.approx(f1(probs.argmax(1) == 1, labels == 1)) == pytest.approx(0.5)
    p3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    y3 = np.array([0, 1, 2, 1])
    m3 = class_metrics(p3, y3)
    per = [roc_auc(p3[:, c], y3 == c) for c in range(3)]
    assert m3.auc == pytest.approx(np.mean(per)) and m3.averaging == "macro over 3 classes, one vs rest"
    assert m3.f1 == pytest.approx(np.mean([f1(p3.argmax(1) == c, y3 == c) for c in range(3)]))


def test_eval_reports_the_same_auc_ap_f1_from_pytorch_logits_and_an_onnx_softmax(tmp_path):
    from compress.commands.export import export_model
    from compress.evaluate import evaluate_model

    export_model("lenet", str(tmp_path / "l.onnx"))
    a = evaluate_model("lenet", "mnist", limit=500).result
    b = evaluate_model(str(tmp_path / "l.onnx"), "mnist", limit=500).result
    assert a.averaging == b.averaging == "macro over 10 classes, one vs rest"
    for key in ("auc", "ap", "f1"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-6), key
    assert 0.99 < a.auc <= 1.0 and a.f1 == pytest.approx(a.top1, abs=0.02)
