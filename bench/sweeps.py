"""Sweeps that fix a sampling setting before the benchmark's comparisons (the ``benchmark`` study; ``cfg-sweep``
runs the λ sweep alone)."""
from __future__ import annotations

import numpy as np


def cfg_sweep(bench, plan, mode, log=print) -> dict:
    """Classifier-free guidance λ (paper Eq. 5): static on ``steps_check_size`` samples for each λ of the mode,
    averaged over ``cfg_check_seeds`` learner seeds. Chosen: the highest mean validation accuracy (ties: smaller λ).
    Label fidelity (the real-data reference classifier on the pool) is reported beside it, not used to choose."""
    seeds = list(mode.cfg_check_seeds)
    rows = {}
    for lam in mode.cfg_scales:
        rs = [bench.run(plan.static(mode.steps_check_size, seed=sd, cfg_scale=lam, tags=("cfg_sweep",)))
              for sd in seeds]
        rows[lam] = {"val_acc": float(np.mean([r["val_acc"] for r in rs])),
                     "val_acc_per_seed": [r["val_acc"] for r in rs],
                     "label_fidelity": float(np.mean([r["label_fidelity"] for r in rs])),
                     "runs": [r["id"] for r in rs]}
        log(f"  λ={lam}: val {rows[lam]['val_acc']:.4f}  fidelity {rows[lam]['label_fidelity']:.3f}")
    chosen = max(rows, key=lambda lam: (round(rows[lam]["val_acc"], 6), -lam))
    log(f"  λ → {chosen}")
    return {"chosen": chosen, "size": mode.steps_check_size, "seeds": seeds,
            "val_acc": {str(k): v["val_acc"] for k, v in rows.items()},
            "val_acc_per_seed": {str(k): v["val_acc_per_seed"] for k, v in rows.items()},
            "label_fidelity": {str(k): v["label_fidelity"] for k, v in rows.items()},
            "runs": {str(k): v["runs"] for k, v in rows.items()},
            "rule": f"λ of the highest static validation accuracy at {mode.steps_check_size} samples, mean over "
                    f"{len(seeds)} learner seed{'s' if len(seeds) > 1 else ''} (ties: smaller λ)"}
