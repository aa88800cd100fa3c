"""The benchmark: studies over the job's own run path, one entry point (``python -m bench <study>``).

Each study module registers itself in :data:`bench.core.STUDIES`; importing the package imports them all.
"""
from deliberate.cli import setup_process

setup_process()  # as `deliberate` does: before anything imports torch

from . import core  # noqa: E402,F401
from . import scaling  # noqa: F401  (registers "scaling")
from . import generator_card  # noqa: F401  (registers "generator-card")
from . import headline  # noqa: F401  (registers "headline")
from . import folders_check  # noqa: F401  (registers "folders-check")
from . import prune_memory  # noqa: F401  (registers "prune-memory")
from . import run  # noqa: F401  (registers "benchmark")
from . import report  # noqa: F401  (registers "report")
from . import guidance_profile  # noqa: F401  (registers "guidance-profile")
from . import cfg_sweep, criteria_sweep, generator_classes, generator_quality  # noqa: F401
from . import job_ladder, job_seeds, learner_audit, pool_scale, recipe_screen  # noqa: F401
