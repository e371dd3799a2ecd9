"""Residual coding: quantizer, context masks, logistic-mixture model, entropy coder."""
