"""Writing and finding model-store entries, and the import command line."""
