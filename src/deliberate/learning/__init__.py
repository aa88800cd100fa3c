"""Learning: the classifier trained only on generated images, its LR schedule and evaluation.

Importing the package registers the built-in learners (models.py)."""
from .learner import Learner  # noqa: F401
from .schedule import WarmupStableDecay  # noqa: F401
from . import models  # noqa: F401
