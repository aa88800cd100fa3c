"""The paper's scaling claim on the embedded default (placeholder while it is being written)."""
from __future__ import annotations

from .core import STUDIES


@STUDIES.register("scaling")
def main(argv: list[str]) -> int:
    """Static frontier, DP and unguided-loop curves over generators; samples and iterations ratios at static's best."""
    raise SystemExit("the scaling study is being written")
