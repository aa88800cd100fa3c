"""What a run shows, in numbers and one sentence: DP − static (and DP − the unguided loop) in held-out test accuracy.

:func:`comparison` reads a run's ``summary.json`` (and the held-out size from ``splits.json``); the block it returns
is stored as ``summary["comparison"]`` and its ``meaning`` sentences are the last lines ``deliberate run`` prints.
The sampling error quoted is the binomial standard error of one accuracy on the held-out set,
sqrt(p(1 − p) / n) at the mean of the two accuracies: it says how far a single run's test accuracy may move with
the test images drawn, not how far it moves with the learner's seed (which is usually more), hence the advice to
compare several learner seeds (``run.seed``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..rundir import write_json

BASELINES = {"static": "static's", "dynamic_unguided": "the unguided loop's"}  # method → "DP's learner vs X's"


def sampling_error_points(acc_a: float, acc_b: float, n_test: int) -> float:
    """Binomial standard error of one test accuracy, in points, at the mean of the two accuracies."""
    p = (acc_a + acc_b) / 2
    return 100 * math.sqrt(p * (1 - p) / n_test)


def meaning(diff_points: float, baseline: str, dp_samples: int, other_samples: int, n_test: int | None,
            se_points: float | None) -> str:
    """One sentence saying what DP − ``baseline`` means, from the numbers (signs and sample counts included)."""
    who = BASELINES.get(baseline, f"{baseline}'s")
    d = round(diff_points, 2)
    if d > 0:
        head = f"DP's learner is {d:.2f} points more accurate on the held-out test set than {who}"
    elif d < 0:
        head = f"DP's learner is {-d:.2f} points less accurate on the held-out test set than {who}"
    else:
        head = f"DP's learner is exactly as accurate on the held-out test set as {who}"
    if dp_samples == other_samples:
        samples = f", with the same {dp_samples:,} generated samples"
    else:
        samples = f", with {dp_samples:,} generated samples against {who} {other_samples:,}"
    tail = (f"; a single run's test accuracy on {n_test:,} images has a sampling error of about ±{se_points:.2f} "
            "points, so compare several learner seeds (run.seed) before concluding." if se_points is not None else
            "; compare several learner seeds (run.seed) before concluding.")
    return head + samples + tail


def comparison(summary: dict, n_test: int | None) -> dict:
    """``{baseline: {...}}`` for each baseline of :data:`BASELINES` that ran beside DP with a held-out accuracy:
    DP − baseline in points, both accuracies and sample counts, the sampling error and the ``meaning`` sentence.
    Empty when DP did not run or the held-out split was not read."""
    methods = summary.get("methods", {})
    dp = methods.get("dp")
    if dp is None or dp.get("test_acc") is None:
        return {}
    out = {}
    for name in BASELINES:
        other = methods.get(name)
        if other is None or other.get("test_acc") is None:
            continue
        diff = 100 * (dp["test_acc"] - other["test_acc"])
        se = sampling_error_points(dp["test_acc"], other["test_acc"], n_test) if n_test else None
        out[name] = {"dp_minus_baseline_points": round(diff, 2), "dp_test_acc": dp["test_acc"],
                     "baseline_test_acc": other["test_acc"], "dp_samples": dp["samples"],
                     "baseline_samples": other["samples"], "test_images": n_test,
                     "sampling_error_points": None if se is None else round(se, 2),
                     "meaning": meaning(diff, name, dp["samples"], other["samples"], n_test, se)}
    return out


def held_out_size(run_dir: Path) -> int | None:
    """Images in the run's held-out test split (``splits.json``), or None where it does not say."""
    path = Path(run_dir) / "splits.json"
    if not path.exists():
        return None
    size = json.loads(path.read_text()).get("test", {}).get("size")
    return int(size) if size else None


def explain_run(run_dir: str | Path) -> list[str]:
    """Add the ``comparison`` block to ``RUN_DIR/summary.json`` (rewritten in place, atomically) and return its
    ``meaning`` sentences (what ``deliberate run`` prints last)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    block = comparison(summary, held_out_size(run_dir))
    if block or "comparison" in summary:
        summary["comparison"] = block
        write_json(run_dir / "summary.json", summary)
    return [c["meaning"] for c in block.values()]
