import math

import numpy as np
import pytest
from skillselect import leaf_weights, smoothed_accuracy


def test_paper_formula_with_cap_zero_accuracy_and_unjudged():
    acc = np.array([0.5, 0.0, 1e-4, 1.0, np.nan])
    w = leaf_weights(acc, temperature=1.0, w_max=1000.0)
    assert w.tolist() == [2.0, 1000.0, 1000.0, 1.0, 0.0]


def test_temperature_and_cap_interact_as_min_acc_pow_minus_t_and_wmax_pow_t():
    acc = np.array([0.25, 0.01, 0.0])
    w = leaf_weights(acc, temperature=0.5, w_max=10.0)
    assert w == pytest.approx([2.0, math.sqrt(10.0), math.sqrt(10.0)])
    assert leaf_weights(acc, temperature=0.0, w_max=10.0).tolist() == [1.0, 1.0, 1.0]
    assert leaf_weights(acc, temperature=2.0, w_max=10.0) == pytest.approx([16.0, 100.0, 100.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"w_max": 0.5}, "w_max"),
        ({"w_max": float("inf")}, "w_max"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        leaf_weights(np.array([0.5]), **kwargs)


def test_accuracy_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        leaf_weights(np.array([1.5]))


def test_laplace_smoothing_lifts_zero_accuracy_and_keeps_unjudged_nan():
    acc = smoothed_accuracy(np.array([0, 3, 0]), np.array([4, 4, 0]), 1.0)
    assert acc[0] == pytest.approx(1 / 6) and acc[1] == pytest.approx(4 / 6) and math.isnan(acc[2])
