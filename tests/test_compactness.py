"""Compactness, the paper's key measurement here: intra (mean distance of a feature to its class mean),
inter (mean distance between class means) and their ratio, on features whose answer is known by hand."""
import math

import numpy as np

from centerloss_cli.core.metrics import compactness


def test_two_classes_by_hand():
    features = np.array([[0, 0], [2, 0], [10, 0], [12, 0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    assert compactness(features, labels) == {"intra": 1.0, "inter": 10.0, "ratio": 0.1}


def test_inter_is_the_mean_over_pairs_of_classes_and_absent_classes_are_left_out():
    # Class means at (0,0), (3,0) and (0,4): pairwise distances 3, 4 and 5. Labels 0, 2 and 7 (1 and 3..6 absent).
    features = np.array([[0, 0], [3, 0], [0, 4]], dtype=np.float64)
    result = compactness(features, np.array([0, 2, 7]))
    assert result["intra"] == 0.0 and math.isclose(result["inter"], 4.0) and result["ratio"] == 0.0


def test_the_ratio_does_not_change_with_the_scale_of_the_features():
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(200, 2)) + np.repeat(np.eye(2) * 5, 100, axis=0), np.repeat([0, 1], 100)
    small, large = compactness(features, labels), compactness(features * 7, labels)
    assert math.isclose(large["intra"], 7 * small["intra"]) and math.isclose(large["ratio"], small["ratio"])


def test_one_class_has_no_inter_and_coincident_means_an_infinite_ratio():
    one = compactness(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([3, 3]))
    assert one["intra"] == 1.0 and math.isnan(one["inter"]) and math.isnan(one["ratio"])
    same = compactness(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), np.array([0, 0, 1, 1]))
    assert same["inter"] == 0.0 and same["ratio"] == math.inf
