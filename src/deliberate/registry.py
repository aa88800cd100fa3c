"""Name → constructor registries (timm-style), so that generators, learners, guidance criteria and
practice methods are chosen by name in the config.

    @GENERATORS.register("pixel_unet")
    class PixelDiffusion: ...

    gen = GENERATORS.build("pixel_unet", cfg)

The registry is the bottom of the import graph: it imports nothing of ``deliberate``. The modules that define
built-ins register themselves when imported, and the package imports them (``deliberate/__init__.py`` and the
subpackages' ``__init__``), so every entry is known once ``deliberate`` is imported.
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
        if name not in self:
            raise KeyError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self))})")
        return self[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get_entry(name)(*args, **kwargs)


GENERATORS = Registry("generator")
LEARNERS = Registry("learner")
CRITERIA = Registry("guidance criterion")
METHODS = Registry("practice method")
