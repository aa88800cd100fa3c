"""Generation: class-conditional diffusion generators and entropy-guided DDIM sampling (paper Section 2).

Importing the package registers the built-in generators and guidance criteria; their backends (diffusers, and
transformers for ``stable_diffusion``) load when a model is built or loaded, not at registration."""
from .base import Generator, GeneratorError, SampleOutput, ShardedGenerator, per_sample_noise  # noqa: F401
from .guidance import Guide, entropy  # noqa: F401
from . import pixel  # noqa: F401  (registers pixel_unet)
from . import real  # noqa: F401  (registers real_images)

try:
    from . import latent  # noqa: F401  (registers stable_diffusion)
except ImportError:  # the latent backend is optional (needs transformers)
    pass
