"""Entropy coding back-ends (constriction's range coder for the residual)."""
