"""Image preparers of the entry process: geometry reproduced with Pillow and numpy, without torch."""
