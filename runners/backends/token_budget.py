"""Split a batch of tokenised texts into forward passes of bounded padded size.

A batch is padded to its longest text, so its memory and compute grow with
``count x longest``: a few long texts among many would cost as many long texts. The groups
keep the batch's order; each holds as many consecutive texts as fit in the budget (padded
tokens), and a single text longer than the budget goes alone.
"""

from __future__ import annotations

from typing import Sequence


def budget_groups(lengths: Sequence[int], budget: int) -> list[range]:
    """Consecutive index ranges covering ``lengths`` whose ``len(range) * max(lengths[range])``
    stays within ``budget`` (a range of one may exceed it)."""
    groups: list[range] = []
    start, longest = 0, 0
    for index, length in enumerate(lengths):
        widest = max(longest, length)
        if index > start and (index - start + 1) * widest > budget:
            groups.append(range(start, index))
            start, widest = index, length
        longest = widest
    if lengths:
        groups.append(range(start, len(lengths)))
    return groups
