"""--fail_fast: a broken sweep stops after a few identical deterministic failures."""
import pytest

from orchestrator.failfast import FailFast, is_crash


def test_the_same_deterministic_error_trips_at_the_limit_and_only_then():
    ff = FailFast(3)
    for error in ("bad config A", "bad config A", "bad config B"):
        ff.failed(error, "log-a", deterministic=True)
    assert not ff.stop_all()
    ff.failed("non-finite loss at task 2", "log-n", deterministic=False)
    ff.failed("non-finite loss at task 2", "log-n", deterministic=False)
    ff.failed("non-finite loss at task 2", "log-n", deterministic=False)
    assert not ff.stop_all()
    ff.failed("bad config A", "log-a3", deterministic=True)
    assert ff.stop_all() and (ff.tripped.error, ff.tripped.count, ff.tripped.log_file) == ("bad config A", 3, "log-a3")


def test_zero_never_stops():
    ff = FailFast(0)
    for _ in range(10):
        ff.failed("same", None, deterministic=True)
    assert not ff.stop_all()


@pytest.mark.parametrize("exc, crash", [
    (MemoryError(), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    ("Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory.", True),
    (ValueError("shapes (3,4) and (5,6) do not align"), False),
    ("Traceback ...\nKeyError: 'lr'", False),
])
def test_crashes_and_out_of_memory_are_not_counted(exc, crash):
    assert is_crash(exc) is crash
