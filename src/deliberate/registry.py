"""Name → constructor registries (timm-style), so that generators, learners, guidance criteria and
practice methods are chosen by name in the config.

    @GENERATORS.register("pixel_unet")
    class PixelDiffusion: ...

    gen = GENERATORS.build("pixel_unet", cfg)

The registry is the bottom of the import graph: it imports nothing of ``deliberate``. The modules that define
built-ins register themselves when imported; the package's ``__init__`` gives each registry a ``loader`` that
imports them (the subpackages' ``__init__`` import their modules), called at the registry's first lookup. So every
entry is known to any lookup once ``deliberate`` is imported, and importing ``deliberate`` imports no backend.
"""
from __future__ import annotations

from typing import Any, Callable


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.loader: Callable[[], Any] | None = None  # imports the modules that register the built-ins

    def complete(self) -> None:
        """Call the ``loader`` once (a lookup made while it runs sees the entries registered so far)."""
        load, self.loader = self.loader, None
        if load is not None:
            try:
                load()
            except BaseException:
                self.loader = load
                raise

    # every lookup sees the built-ins; registering does not load them (the built-in modules register while loading)
    def __contains__(self, name: object) -> bool:
        self.complete()
        return dict.__contains__(self, name)

    def __getitem__(self, name: str) -> Any:
        self.complete()
        return dict.__getitem__(self, name)

    def __iter__(self):
        self.complete()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.complete()
        return dict.__len__(self)

    def get(self, name: str, default: Any = None) -> Any:
        self.complete()
        return dict.get(self, name, default)

    def keys(self):
        self.complete()
        return dict.keys(self)

    def values(self):
        self.complete()
        return dict.values(self)

    def items(self):
        self.complete()
        return dict.items(self)

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
