"""Generation: class-conditional diffusion generators and entropy-guided DDIM sampling (paper Section 2)."""
from .base import Generator, SampleOutput, per_sample_noise  # noqa: F401
from .guidance import Guide, entropy  # noqa: F401
