"""The learner learns: the suite's real-data classifier (``real_classifier``: cnn_small, 150 steps of batch 64 on
1,500 real images, the default optimiser, schedule and augmentation) must reach an accuracy that a broken optimiser,
schedule, augmentation or label pipeline would miss (measured 0.79 on the 300 validation images; chance 0.10)."""
from __future__ import annotations


def test_cnn_small_learns_from_real_images(real_classifier, splits):
    acc = real_classifier.accuracy(splits.val.images, splits.val.labels)
    assert acc >= 0.70, acc


def test_learner_schedule_is_warmup_stable_decay(real_classifier):
    s = real_classifier.schedule
    lr = [s.factor(i) for i in range(s.total)]
    assert lr[0] < lr[s.warmup_end - 1] == 1.0 and all(v == 1.0 for v in lr[s.warmup_end:s.decay_start])
    assert all(a >= b for a, b in zip(lr[s.decay_start:], lr[s.decay_start + 1:])) and lr[-1] < 0.05
