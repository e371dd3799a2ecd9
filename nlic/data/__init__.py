"""Datasets and the Lightning data module (built-in images or any image folder)."""
