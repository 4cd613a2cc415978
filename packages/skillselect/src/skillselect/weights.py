"""Leaf weights from per-leaf accuracy: the paper's ``w = min(acc^-T, w_max^T)``."""

from __future__ import annotations

import numpy as np


def leaf_weights(accuracy: np.ndarray, *, temperature: float = 1.0, w_max: float = 1000.0) -> np.ndarray:
    """``min(acc^-T, w_max^T)``; ``w_max^T`` when acc is 0; 0 for unjudged leaves (NaN accuracy).

    Equivalently ``max(acc, 1/w_max)^-T``: ``w_max`` is the accuracy floor that caps the weight of
    zero-accuracy leaves, ``T`` flattens (T < 1) or sharpens (T > 1) the preference for weak leaves,
    and T = 0 gives every judged leaf the same weight.
    """
    if not (temperature >= 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if not (w_max >= 1 and np.isfinite(w_max)):
        raise ValueError(f"w_max must be a finite number >= 1, got {w_max}")
    acc = np.asarray(accuracy, dtype=np.float64)
    judged = ~np.isnan(acc)
    if np.any((acc[judged] < 0) | (acc[judged] > 1)):
        raise ValueError("accuracies must lie in [0, 1] (or be NaN for unjudged leaves)")
    cap = float(w_max) ** temperature
    out = np.zeros(acc.shape, dtype=np.float64)
    positive = judged & (acc > 0)
    out[positive] = np.minimum(acc[positive] ** -temperature, cap)
    out[judged & (acc == 0)] = cap
    return out


def smoothed_accuracy(correct: np.ndarray, attempts: np.ndarray, smoothing: float) -> np.ndarray:
    """Add-``smoothing`` (Laplace) estimate ``(correct + s) / (attempts + 2 s)``; NaN where unjudged."""
    c = np.asarray(correct, dtype=np.float64)
    a = np.asarray(attempts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a > 0, (c + smoothing) / (a + 2 * smoothing), np.nan)
