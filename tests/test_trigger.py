from deliberate.learning.schedule import WarmupStableDecay
from deliberate.practice.trigger import PatienceTrigger


def test_fires_after_exactly_t_max_stale_evaluations():
    for t_max in (1, 2, 4):
        trig = PatienceTrigger(t_max)
        assert trig.update(0.5) is False  # first evaluation is an improvement
        fired = [trig.update(0.5) for _ in range(t_max)]
        assert fired == [False] * (t_max - 1) + [True]


def test_improvement_resets_and_addition_resets():
    trig = PatienceTrigger(2)
    trig.update(0.5)
    trig.update(0.4)
    assert trig.stale == 1
    assert trig.update(0.6) is False and trig.stale == 0
    trig.update(0.6)
    assert trig.update(0.6) is True
    trig.added()
    assert trig.stale == 0
    assert trig.update(0.6) is False


def test_incremental_patience_grows_after_each_addition():
    trig = PatienceTrigger(1, growth=2)
    trig.update(1.0)
    assert trig.update(0.0) is True
    trig.added()
    assert trig.t_max == 3
    assert [trig.update(0.0) for _ in range(3)] == [False, False, True]


def test_min_delta_counts_small_gains_as_stale():
    trig = PatienceTrigger(1, min_delta=0.01)
    trig.update(0.5)
    assert trig.update(0.505) is True


def test_wsd_schedule_phases():
    s = WarmupStableDecay(1000, 0.1, 0.2)
    assert s.factor(0) == 1 / 100 and s.factor(99) == 1.0
    assert all(s.factor(i) == 1.0 for i in range(100, 800))
    assert s.factor(999) < 0.01 and s.factor(900) < 1.0
    assert not s.is_stable(99) and s.is_stable(100) and s.is_stable(799) and not s.is_stable(800)
