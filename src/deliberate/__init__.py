"""deliberate: Deliberate Practice for synthetic data generation.

Askari-Hemmat et al., "Improving the Scaling Laws of Synthetic Data with Deliberate Practice", ICML 2025.
The package is laid out as the system flows: ``data`` (real splits) → ``generation`` (diffusion generator,
entropy-guided DDIM) → ``learning`` (the classifier) → ``practice`` (the pool, the patience trigger and
Algorithm 1) → ``reports`` (plots and the markdown report); ``theory`` holds Section 4.
"""
__version__ = "0.1.0"
