"""The mutation check's list stays applicable: every snippet is still in its file exactly once
and every test it names still exists, so ``make mutation`` cannot rot between its runs."""

from __future__ import annotations

import pytest

from serving import REPO
from tests.mutation.mutations import MUTATIONS, Mutation
from tests.mutation.run import applicability


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[mutation.name for mutation in MUTATIONS])
def test_every_mutation_applies_and_names_existing_tests(mutation: Mutation):
    assert applicability(mutation, REPO) == "applies"
    for node in mutation.tests:
        path, _, function = node.partition("::")
        source = (REPO / path).read_text(encoding="utf-8")
        if function:
            assert f"def {function.split('[')[0]}(" in source, node


def test_there_are_at_least_fifteen_named_mutations():
    assert len({mutation.name for mutation in MUTATIONS}) == len(MUTATIONS) >= 15
