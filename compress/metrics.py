"""Ranking and classification metrics of a classifier's scores: ROC AUC, average precision, F1.

The seed's quantization table reports, beside accuracy, the AUC, AP and f1 of its two-class task. The
definitions are the standard ones (those of scikit-learn's ``roc_auc_score``, ``average_precision_score`` and
``f1_score``), computed here with NumPy:

- **ROC AUC**: the probability that a random positive scores above a random negative, ties counting half
  (the Mann-Whitney U statistic with average ranks).
- **Average precision**: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, from the highest
  (tied scores form one threshold): the area under the precision-recall curve without interpolation.
- **F1**: ``2 P R / (P + R)`` of the predicted class (the argmax), 0 when there are no true or predicted
  positives.

For two classes every figure is the positive class's (class 1), as in the seed's task; for more, each is
the unweighted mean over the classes, one against the rest (``macro``). A class absent from the labels has
no AUC or AP and is left out of their means (and said in ``averaging``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    auc: float | None  # None when the labels hold one class only
    ap: float | None
    f1: float
    averaging: str  # "positive class (1)" or "macro over N classes, one vs rest"


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels (None without both kinds of labels)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks (1-based) over runs of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Average precision of ``scores`` for the boolean ``positive`` labels (None without positives)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(p)[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    precision, recall = tp / predicted, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1(predicted: np.ndarray, positive: np.ndarray) -> float:
    """F1 of the boolean predictions against the boolean labels (0 when it is undefined)."""
    predicted, positive = np.asarray(predicted, bool), np.asarray(positive, bool)
    tp = int((predicted & positive).sum())
    denominator = int(predicted.sum()) + int(positive.sum())
    return 2.0 * tp / denominator if denominator else 0.0


def class_metrics(probabilities: np.ndarray, labels: np.ndarray) -> ClassMetrics:
    """AUC, AP and F1 of class ``probabilities`` (N, C), a softmax's output, against integer ``labels`` (N,):
    the class-``c`` probability ranks the samples for class ``c`` (scikit-learn's one-vs-rest), the argmax is
    the prediction."""
    probs, labels = np.asarray(probabilities, np.float64), np.asarray(labels, np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities (N, C) and labels (N,), found {probs.shape} and "
                         f"{labels.shape}")
    classes = probs.shape[1]
    predicted = probs.argmax(1)
    if classes == 2:
        pos = labels == 1
        return ClassMetrics(roc_auc(probs[:, 1], pos), average_precision(probs[:, 1], pos),
                            f1(predicted == 1, pos), "positive class (1)")
    aucs, aps, f1s = [], [], []
    for c in range(classes):
        pos = labels == c
        a, p = roc_auc(probs[:, c], pos), average_precision(probs[:, c], pos)
        if a is not None:
            aucs.append(a)
        if p is not None:
            aps.append(p)
        f1s.append(f1(predicted == c, pos))
    absent = classes - len(aps)
    note = f"macro over {classes} classes, one vs rest"
    if absent:
        note += f" ({absent} absent from the labels)"
    return ClassMetrics(float(np.mean(aucs)) if aucs else None, float(np.mean(aps)) if aps else None,
                        float(np.mean(f1s)), note)
