"""Real data: the splits the loop may read (generator training, plateau validation) and the held-out test."""
from .splits import HeldOut, RealSplits, load_splits  # noqa: F401
from .idx import DataError  # noqa: F401
