"""Learning: the classifier trained only on generated images, its LR schedule and evaluation."""
from .learner import Learner  # noqa: F401
from .schedule import WarmupStableDecay  # noqa: F401
