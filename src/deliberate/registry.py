"""Name → constructor registries (timm-style), so that generators, learners, guidance criteria and
practice methods are chosen by name in the config.

    @GENERATORS.register("pixel_unet")
    class PixelDiffusion: ...

    gen = GENERATORS.build("pixel_unet", cfg)
"""
from __future__ import annotations

from typing import Any, Callable


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable:
        def deco(obj: Any) -> Any:
            if dict.__contains__(self, name):
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self[name] = obj
            return obj

        return deco

    def get_entry(self, name: str) -> Any:
        _import_builtins()
        if name not in self:
            raise KeyError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self))})")
        return self[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get_entry(name)(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        _import_builtins()
        return super().__contains__(name)

    def __iter__(self):
        _import_builtins()
        return super().__iter__()


GENERATORS = Registry("generator")
LEARNERS = Registry("learner")
CRITERIA = Registry("guidance criterion")
METHODS = Registry("practice method")

_IMPORTED = False


def _import_builtins() -> None:
    """Import the modules that register the built-in entries (lazily, to keep import time low)."""
    global _IMPORTED
    if _IMPORTED:
        return
    _IMPORTED = True
    from .generation import guidance, pixel  # noqa: F401
    from .learning import models  # noqa: F401
    from .practice import methods  # noqa: F401
    try:
        from .generation import latent  # noqa: F401
    except ImportError:  # the latent backend is optional (needs transformers)
        pass
