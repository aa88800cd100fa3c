"""Shared fixtures: real Fashion-MNIST splits (small) and tiny, briefly trained models; whole processes that the
session starts early (``background``)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from deliberate.cli import setup_process

setup_process()  # as the command line does (OMP_WAIT_POLICY, glibc's large buffers); must precede `import torch`

import pytest  # noqa: E402
import torch  # noqa: E402

from deliberate.config import load_config  # noqa: E402
from resume_support import tiny_cnn  # noqa: E402,F401  (registers the "tiny_cnn" learner that TINY uses)

# Tiny models: one intra-op thread is faster than two, and much faster when the cores are shared.
torch.set_num_threads(1)

TINY = [
    "data.val_size=300", "data.gen_train_size=1500",
    "generator.block_out_channels=[8,16]", "generator.train_steps=30", "generator.batch_size=32",
    "sampling.steps=4", "sampling.batch_size=64", "sampling.shard_size=20",
    # a ~2k-parameter learner: the held-out evaluations (10k images, by the job and again by recomputed_test_acc)
    # cost ~300x less than with cnn_small, which test_learning.py and the smoke preset exercise
    "learner.model=tiny_cnn", "learner.batch_size=32", "learner.eval_batch_size=300",
    "practice.iterations=60", "practice.eval_every=5", "practice.initial_samples=40", "practice.add_samples=20",
    "practice.patience=1", "practice.patience_growth=0", "practice.max_samples=120",
    "run.progress=false", "run.device=cpu",  # the fixtures' models are on the CPU, whatever the machine has
]


def tiny_config(tmp_path, *extra: str):
    return load_config(None, TINY + [f"generator.cache_dir={tmp_path}/gen-cache", f"run.out_dir={tmp_path}/runs",
                                     *extra])


def recomputed_test_acc(run_dir, method: str) -> float:
    """Held-out accuracy of a run's saved final model, computed here from its weights and config: what the
    summary reports must be this number (a wrong split, scrambled labels or another model would differ)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from deliberate.data import load_splits
    from deliberate.learning import Learner

    cfg = load_config(Path(run_dir) / "config.yaml")
    d = cfg.data
    test = load_splits(d.root, d.val_size, d.gen_train_size, d.split_seed).test.read("test: recompute")
    learner = Learner(cfg.learner, 10, 1, 1)
    learner.eval_model.load_state_dict(load_file(Path(run_dir) / "methods" / method / "model.safetensors"))
    return learner.accuracy(test.images, test.labels)


@pytest.fixture(scope="session")
def splits():
    from deliberate.data import load_splits

    return load_splits("/usr/share/datasets/fashion-mnist", val_size=300, gen_train_size=1500, seed=0)


@pytest.fixture(scope="session")
def tiny_generator(splits, tmp_path_factory):
    """A (8,16)-channel pixel UNet trained for 30 steps: poor images, real code path."""
    from deliberate.generation.pixel import obtain_pixel_generator

    cfg = tiny_config(tmp_path_factory.mktemp("gen"))
    gen, _ = obtain_pixel_generator(cfg, splits, progress=False)
    return gen


@pytest.fixture(scope="session")
def real_classifier(splits):
    """cnn_small trained for 150 steps on real images: a fixed, trained classifier for guidance tests."""
    from deliberate.learning import Learner

    cfg = load_config(None, ["learner.batch_size=64"])
    learner = Learner(cfg.learner, 10, 1, total_iterations=150, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = splits.gen_train.images, splits.gen_train.labels
    for _ in range(150):
        idx = torch.randint(0, len(y), (64,), generator=g)
        learner.step(x[idx], y[idx])
    return learner


# ----------------------------------------------------------------------------------- processes started early
# A few tests check a whole process of a minute (the smoke preset through the command line, the determinism tests
# under AVX2). The other tests run on one thread, so such a process started when the session starts runs on the
# core they leave idle: a test marked ``background(spec=f)`` gets the finished process from ``background`` and checks
# it as it would have after running it itself, and runs last (its process had the whole session to finish). The spec
# is a keyword (``background(spec=f)``): a mark called with one function would decorate that function instead.
def pytest_configure(config):
    config.addinivalue_line("markers", "background(spec=f): f(out_dir) -> dict(args=..., cwd=..., env=..., "
                                       "timeout=...) or None: a process started when the session starts")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)  # stable: the rest keep order


class Background:
    """The processes of the session's ``background`` tests: started at once, each in its own output folder."""

    def __init__(self, items, tmp_path_factory):
        self.procs: dict[str, tuple] = {}
        for item in items:
            mark = item.get_closest_marker("background")
            if mark is None:
                continue
            folder = tmp_path_factory.mktemp("background")
            spec = mark.kwargs["spec"](folder)
            if spec is None:  # nothing to run here (the test skips)
                continue
            out, err = (open(folder / name, "w+") for name in ("stdout.txt", "stderr.txt"))
            p = subprocess.Popen(spec["args"], cwd=spec.get("cwd"), env=spec.get("env"), stdout=out, stderr=err,
                                 text=True)
            self.procs[item.nodeid] = (p, out, err, time.monotonic() + spec["timeout"], folder)

    def result(self, nodeid: str) -> tuple[subprocess.CompletedProcess, Path]:
        """The finished process of this test (its stdout and stderr as text) and its output folder; a process past
        its timeout is killed and raises ``subprocess.TimeoutExpired``, as ``subprocess.run(timeout=...)`` would."""
        p, out, err, deadline, folder = self.procs[nodeid]
        try:
            p.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read()), folder

    def stop(self) -> None:
        for p, out, err, *_ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory):
    bg = Background(request.session.items, tmp_path_factory)
    yield bg
    bg.stop()
