"""``python -m bench <study> [options]``: run one registered study; ``python -m bench`` lists them."""
from __future__ import annotations

import sys

from . import core  # noqa: F401  (importing the package registers every study)
from .core import STUDIES as _REGISTRY


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: python -m bench <study> [options]   (python -m bench <study> --help for its options)\n")
        print("studies:")
        for name in sorted(_REGISTRY):
            doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()
            print(f"  {name:<18} {doc[0] if doc else ''}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in _REGISTRY:
        print(f"unknown study '{name}' (known: {', '.join(sorted(_REGISTRY))})", file=sys.stderr)
        return 2
    return int(_REGISTRY[name](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
