"""The reference classifier behind every label-fidelity number: trained on the real generator-training split only
(never validation or test), cached under a key that changes with what it was trained on."""
from __future__ import annotations

from dataclasses import replace

import torch

from deliberate.config import load_config
from deliberate.data.splits import Split
from deliberate.evaluation import obtain_reference
from deliberate.learning.learner import Learner


def test_reference_trains_on_the_real_generator_split_only(splits, tmp_path, monkeypatch):
    cfg = load_config(None, ["learner.batch_size=16"])
    seen = []
    real_step = Learner.step

    def spy(self, images, labels):
        seen.append(images.clone())
        return real_step(self, images, labels)

    monkeypatch.setattr(Learner, "step", spy)
    ref, info = obtain_reference(cfg, splits, iterations=5, cache_dir=tmp_path)
    assert info["source"] == "trained" and info["trained_on"] == "real gen_train split" and len(seen) == 5
    pool = {bytes(x.numpy().tobytes()) for x in splits.gen_train.images}
    assert all(bytes(x.numpy().tobytes()) in pool for batch in seen for x in batch)  # a val or test image: not
    # cached: the same key answers without training; other data or iterations make another key
    seen.clear()
    again, info2 = obtain_reference(cfg, splits, iterations=5, cache_dir=tmp_path)
    assert info2["source"] == "cache" and info2["key"] == info["key"] and not seen
    assert torch.equal(again.predict(splits.val.images[:8]), ref.predict(splits.val.images[:8]))
    other = replace(splits, gen_train=Split(splits.gen_train.images[:400], splits.gen_train.labels[:400],
                                            splits.gen_train.indices[:400]),
                    meta={**splits.meta, "gen_train": {**dict(splits.meta.get("gen_train") or {}), "size": 400}})
    assert obtain_reference(cfg, other, iterations=5, cache_dir=tmp_path)[1]["key"] != info["key"]
    assert obtain_reference(cfg, splits, iterations=6, cache_dir=tmp_path)[1]["key"] != info["key"]
