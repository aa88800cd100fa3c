"""The README is for users: short, its links resolve, and its results table is the one generated from the committed
result files (`python -m bench headline`), so a number in it cannot drift from its file."""
from __future__ import annotations

import re
from pathlib import Path

from bench.headline import render, render_scaling

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_results_table_is_generated_from_the_result_files():
    assert render() in README and render_scaling() in README


def test_links_resolve_and_it_stays_short():
    links = [m for m in re.findall(r"\]\(([^)#]+)\)", README) if not m.startswith("http")]
    assert links and [m for m in links if not (ROOT / m).exists()] == []
    assert len(README.splitlines()) < 200


def test_the_two_commands_are_the_ci_command():
    assert "make run" in README and "make test" in README
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
