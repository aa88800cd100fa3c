"""The job end to end on a class-folder dataset: three classes of shapes at 32 px RGB, written here with PIL; the
pixel generator is trained at 3x32x32, the learner reads three channels, DP and static run, the held-out accuracy
is that of the saved models on the folder's held-out images."""
from __future__ import annotations

import json

from safetensors.torch import load_file

from conftest import tiny_config
from test_folders_data import shapes


def test_shapes_dataset_end_to_end(tmp_path):
    from deliberate.data.classfolders import load_class_folder_splits
    from deliberate.job import run_job
    from deliberate.learning import Learner
    from deliberate.practice.pool import open_pool

    root = shapes(tmp_path / "ds", per_class=20)
    cfg = tiny_config(tmp_path, "data.name=class_folders", f"data.root={root}", "data.val_size=9",
                      "data.test_size=15", "data.gen_train_size=0", "data.workers=0",
                      "learner.loader_workers=0")
    run_dir = run_job(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["methods"]) == {"dp", "static"} and summary["generator"]["source"] == "trained"
    gen_meta = json.loads((tmp_path / "gen-cache" / summary["generator"]["key"] / "deliberate_generator.json")
                          .read_text())
    assert gen_meta["image_shape"] == [3, 32, 32] and gen_meta["num_classes"] == 3
    splits_rec = json.loads((run_dir / "splits.json").read_text())
    assert (splits_rec["gen_train"]["size"], splits_rec["val"]["size"], splits_rec["test"]["size"]) == (36, 9, 15)
    test = load_class_folder_splits(cfg.data).test.read("test: recompute")
    for name, m in summary["methods"].items():
        pool = open_pool(run_dir / "methods" / name / "pool")
        assert pool.images.shape[1:] == (3, 32, 32) and set(pool.labels.tolist()) == {0, 1, 2}
        learner = Learner(cfg.learner, 3, 3, 1)
        learner.eval_model.load_state_dict(load_file(run_dir / "methods" / name / "model.safetensors"))
        assert m["test_acc"] == learner.accuracy(test.images, test.labels)
        assert m["iterations"] == cfg.practice.iterations
