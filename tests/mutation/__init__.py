"""Mutation check: named, realistic bugs applied one at a time to a copy of the repository,
each of which the tests named beside it must catch (``python -m tests.mutation``)."""
