"""The practice loop (paper Algorithm 1): the sample pool, the patience trigger and the training loop.

Importing the package registers the practice methods (methods.py, prune.py)."""
from .pool import Pool, PoolError  # noqa: F401
from .trigger import PatienceTrigger  # noqa: F401
from . import methods, prune  # noqa: F401
