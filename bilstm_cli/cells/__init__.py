"""Recurrent cells: gate blocks, weight shapes, framework conventions and a NumPy forward pass."""
