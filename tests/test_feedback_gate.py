"""The promotion gate's statistics: DeLong against a direct computation and sklearn, the paired
bootstrap's direction, the decision rule, and the false-promotion rate of the rule on
simulated equal models (the real-data rate is bench/feedback_gate.py's)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lifecycle.evaluation import Predictions
from lifecycle.feedback import gate


def scored(n: int, signal_a: float, signal_b: float, seed: int, shared: float = 0.7):
    """Labels and two correlated score vectors whose separation is signal_a / signal_b."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    common = rng.normal(size=n)
    a = signal_a * y + shared * common + rng.normal(size=n)
    b = signal_b * y + shared * common + rng.normal(size=n)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    return y, sig(a - 1), sig(b - 1)


def direct_delong(y, a, b):
    """The DeLong variance straight from its definition, O(m n): the check on the fast one."""
    pos, neg = y == 1, y == 0
    def psi(x, z):
        return (x > z) + 0.5 * (x == z)
    comps = []
    for s in (a, b):
        kernel = psi(s[pos][:, None], s[neg][None, :]).astype(float)
        comps.append((kernel.mean(), kernel.mean(axis=1), kernel.mean(axis=0)))
    m, n = pos.sum(), neg.sum()
    s10 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    s01 = np.cov(np.vstack([comps[0][2], comps[1][2]]))
    cov = s10 / m + s01 / n
    return comps[0][0], comps[1][0], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def test_delong_matches_its_definition_and_sklearn_with_ties():
    y, a, b = scored(300, 1.0, 1.4, seed=1)
    a = np.round(a, 2)  # ties, where the midranks matter
    got = gate.delong(y, a, b)
    auc_a, auc_b, variance = direct_delong(y, a, b)
    assert got["champion"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert got["challenger"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert got["champion"] == pytest.approx(auc_a) and got["challenger"] == pytest.approx(auc_b)
    assert got["se"] ** 2 == pytest.approx(variance, rel=1e-9)


def test_delong_agrees_with_the_paired_bootstrap():
    y, a, b = scored(1500, 1.0, 1.2, seed=2)
    pa, pb = Predictions("binary", y, a, (0, 1)), Predictions("binary", y, b, (0, 1))
    d = gate.paired_difference("roc_auc", pa, pb, (0.5, 0.5), 0.95, 1, seed=0)
    assert d["method"] == "delong"
    ones = np.ones((1, len(y)))
    from lifecycle.evaluation import weighted_metric

    rng = np.random.default_rng(0)
    w = rng.poisson(1.0, size=(2000, len(y))).astype(float)
    boot = weighted_metric(pb, "roc_auc", None, w) - weighted_metric(pa, "roc_auc", None, w)
    assert d["difference"] == pytest.approx(float(weighted_metric(pb, "roc_auc", None, ones)[0]
                                                  - weighted_metric(pa, "roc_auc", None, ones)[0]))
    assert d["se"] == pytest.approx(boot.std(ddof=1), rel=0.15)


def test_identical_models_have_no_difference_and_are_not_promoted():
    y, a, _ = scored(500, 1.0, 1.0, seed=3)
    p = Predictions("binary", y, a, (0, 1))
    d = gate.paired_difference("roc_auc", p, p, (0.5, 0.5), 0.95, 200, seed=0)
    assert d["difference"] == 0 and d["low"] == 0 and d["high"] == 0
    assert not gate.decide(d, 0.0, []).promote


def test_paired_bootstrap_sign_follows_the_metric_direction():
    """log loss: lower is better, so a better challenger has a positive difference."""
    y, a, b = scored(800, 0.6, 2.0, seed=4)
    pa, pb = Predictions("binary", y, a, (0, 1)), Predictions("binary", y, b, (0, 1))
    d = gate.paired_difference("log_loss", pa, pb, (0.5, 0.5), 0.95, 300, seed=1)
    assert d["method"] == "paired_bootstrap"
    assert d["challenger"] < d["champion"] and d["difference"] > 0 and d["low"] > 0
    worse = gate.paired_difference("log_loss", pb, pa, (0.5, 0.5), 0.95, 300, seed=1)
    assert worse["difference"] < 0 and worse["high"] < 0


def test_decision_rule_each_reason():
    primary = {"metric": "roc_auc", "difference": 0.004, "low": -0.002, "high": 0.01}
    d = gate.decide(primary, 0.01, [])
    assert not d.promote and len(d.reasons) == 2
    primary = {"metric": "roc_auc", "difference": 0.03, "low": 0.01, "high": 0.05}
    assert gate.decide(primary, 0.01, []).promote
    rail = gate.guardrail("calibration_error", 0.02, 0.08, 0.03, higher_is_better=False)
    d = gate.decide(primary, 0.01, [rail])
    assert not d.promote and "calibration_error" in d.reasons[0]
    relative = gate.guardrail("latency_p95_ms", 2.0, 2.8, 0.5, higher_is_better=False,
                              relative=True)
    assert relative.passed  # 40% slower, 50% allowed
    unmeasured = gate.guardrail("recall[x=y]", None, 0.5, 0.05, higher_is_better=True)
    assert unmeasured.passed and "not measurable" in unmeasured.detail["note"]
    assert d.as_dict()["rule"].startswith("promote iff")


def test_segment_recall_and_calibration_error():
    y = np.array([1, 1, 0, 1, 0, 1])
    s = np.array([0.9, 0.2, 0.7, 0.6, 0.1, 0.8])
    inside = np.array([True, True, True, False, False, False])
    recall, k = gate.segment_recall(y, s, 0.5, inside)
    assert (recall, k) == (0.5, 2)
    assert gate.segment_recall(y, s, 0.5, np.zeros(6, bool)) == (None, 0)
    perfect = np.array([0.0, 1.0, 0.0, 1.0])
    assert gate.calibration_error(np.array([0, 1, 0, 1]), perfect) == 0


def test_false_promotion_rate_of_equal_models_is_at_most_five_percent():
    """200 windows where the challenger is exactly as good as the champion: the rule (with no
    minimum effect at all) promotes in about 2.5% of them (a one-sided 2.5% test)."""
    promoted = 0
    for seed in range(200):
        y, a, b = scored(600, 1.0, 1.0, seed=100 + seed)
        pa, pb = Predictions("binary", y, a, (0, 1)), Predictions("binary", y, b, (0, 1))
        d = gate.paired_difference("roc_auc", pa, pb, (0.5, 0.5), 0.95, 1, seed)
        promoted += gate.decide(d, 0.0, []).promote
    assert promoted / 200 <= 0.05


def test_power_against_a_clearly_better_challenger():
    promoted = 0
    for seed in range(50):
        y, a, b = scored(800, 1.0, 1.6, seed=500 + seed)
        pa, pb = Predictions("binary", y, a, (0, 1)), Predictions("binary", y, b, (0, 1))
        d = gate.paired_difference("roc_auc", pa, pb, (0.5, 0.5), 0.95, 1, seed)
        promoted += gate.decide(d, 0.01, []).promote
    assert promoted / 50 >= 0.9
