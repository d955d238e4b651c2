"""The benchmarks' one way to print their figures: a markdown table, as bench/RESULTS.md quotes them."""
from __future__ import annotations

from typing import Iterable, Sequence


def print_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
