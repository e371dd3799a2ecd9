"""LightningModules: optimisation, logging and checkpoints around the plain codecs."""
