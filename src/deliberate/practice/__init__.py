"""The practice loop (paper Algorithm 1): the sample pool, the patience trigger and the training loop."""
from .pool import Pool, PoolError  # noqa: F401
from .trigger import PatienceTrigger  # noqa: F401
