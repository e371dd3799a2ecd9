"""Evaluation by real coding: figures per image and tau, results files, W&B logging."""
