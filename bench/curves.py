"""Equal-accuracy ratios read off accuracy curves (interpolated on a log axis), with honest bounds.

A curve is a set of (x, accuracy) points: x is generated samples, training iterations or compute seconds. The
accuracy reachable with at most x is the *Pareto frontier*: the points that beat every point with a smaller x.
``x_to_reach(target)`` is the x where the frontier, linearly interpolated in log x between consecutive frontier
points, first reaches ``target``. Outside the measured range the answer is a bound, never an extrapolation:

* target at or below the first point's accuracy: x ≤ x_min (bound ``"<="``);
* target above every point: x > x_max (bound ``">"``): the curve never got there.

A ratio of two such quantities carries the combined bound (``"="``, ``">="``, ``">"``, ``"<="``, ``"<"``, or
``"?"`` when the bounds point in opposite directions).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Reach:
    """The x a curve needs to reach an accuracy: exactly ``value`` (``"="``), at most (``"<="``) or more than
    (``">"``) it."""
    value: float
    bound: str = "="


def frontier(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto points of (x, y): sorted by x (ties: best y), keeping each point whose y beats every earlier y."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) == 0 or len(xs) != len(ys):
        raise ValueError(f"a curve needs matching, non-empty x and y (got {len(xs)} and {len(ys)})")
    if np.any(xs <= 0) or not np.all(np.isfinite(xs)) or not np.all(np.isfinite(ys)):
        raise ValueError("curve x must be positive and finite, y finite (log-axis interpolation)")
    order = np.lexsort((-ys, xs))
    fx, fy = [], []
    for x, y in zip(xs[order], ys[order]):
        if not fy or y > fy[-1]:
            fx.append(x)
            fy.append(y)
    return np.asarray(fx), np.asarray(fy)


def x_to_reach(target: float, xs, ys) -> Reach:
    """The smallest x at which the curve reaches accuracy ``target`` (log-x interpolation on the frontier)."""
    fx, fy = frontier(xs, ys)
    if target <= fy[0]:
        return Reach(float(fx[0]), "<=")
    if target > fy[-1]:
        return Reach(float(fx[-1]), ">")
    j = int(np.searchsorted(fy, target, side="left"))  # fy[j-1] < target <= fy[j]
    t = (target - fy[j - 1]) / (fy[j] - fy[j - 1])
    return Reach(float(math.exp(math.log(fx[j - 1]) + t * (math.log(fx[j]) - math.log(fx[j - 1])))), "=")


def y_at(x: float, xs, ys) -> float:
    """The frontier's accuracy at ``x`` (log-x interpolation; clamped to the end points)."""
    fx, fy = frontier(xs, ys)
    if x <= fx[0]:
        return float(fy[0])
    if x >= fx[-1]:
        return float(fy[-1])
    return float(np.interp(math.log(x), np.log(fx), fy))


_FLIP = {"=": "=", "<=": ">=", ">": "<"}


def _combine(a: str, b: str) -> str:
    """Bound of a product of two bounded factors (each "=", ">=", ">", "<=", "<" relative to its value)."""
    if a == "=":
        return b
    if b == "=":
        return a
    if a[0] != b[0]:
        return "?"
    return a[0] if (len(a) == 1 or len(b) == 1) else a


def ratio(num: Reach | float, den: Reach | float) -> dict:
    """``num / den`` with its bound: a numerator that is at most its value bounds the ratio from above, a
    denominator that is at most its value bounds it from below, and so on."""
    num = num if isinstance(num, Reach) else Reach(float(num))
    den = den if isinstance(den, Reach) else Reach(float(den))
    return {"value": num.value / den.value, "bound": _combine(num.bound, _FLIP[den.bound])}


def goal_status(r: dict, goal: float, higher_is_better: bool = True) -> str:
    """``"met"``, ``"not met"`` or ``"undetermined"`` (a bound on the wrong side of the goal) for a ratio."""
    v, b = r["value"], r["bound"]
    if v is None or b == "?" or (isinstance(v, float) and not math.isfinite(v)):
        return "undetermined"
    if not higher_is_better:
        v, goal = -v, -goal
        b = {"=": "=", "<=": ">=", ">=": "<=", "<": ">", ">": "<"}[b]
    if v >= goal:
        return "met" if b in ("=", ">=", ">") else "undetermined"
    return "not met" if b in ("=", "<=", "<") else "undetermined"


def summarize(values) -> dict:
    """Mean, sample standard deviation, min, max and count of seed replicates."""
    v = np.asarray([x for x in values if x is not None], float)
    if len(v) == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "n": int(len(v))}


def se(values) -> float:
    """Standard error of the mean of seed replicates (NaN for fewer than two)."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def paired_pp(seeds, diffs) -> dict:
    """Paired differences (one per learner seed, accuracy fractions) as the tables report them: the seeds, and the mean
    and its standard error in percentage points."""
    return {"seeds": list(seeds), "mean_pp": 100 * float(np.mean(diffs)), "se_pp": 100 * se(diffs)}


def reach_dict(r: Reach) -> dict:
    return asdict(r)
