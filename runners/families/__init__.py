"""The model families: one adapter module each (torch-free), with its engine beside it."""
