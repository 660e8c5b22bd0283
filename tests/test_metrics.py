import pytest

from engine.metrics import summarize


def test_metrics_on_a_hand_computed_matrix():
    acc = [[90.0], [60.0, 80.0], [50.0, 70.0, 85.0]]
    m = summarize(acc)
    assert m["faa"] == pytest.approx((50 + 70 + 85) / 3)
    assert m["caa"] == pytest.approx((90 + (60 + 80) / 2 + (50 + 70 + 85) / 3) / 3)
    assert m["ffm"] == pytest.approx(((90 - 50) + (80 - 70)) / 2)   # max over i < T-1
    assert m["bwt"] == pytest.approx(((50 - 90) + (70 - 80)) / 2)


def test_single_task_has_no_forgetting():
    m = summarize([[75.0]])
    assert m["faa"] == 75.0 and m["caa"] == 75.0 and m["ffm"] is None and m["bwt"] is None
