"""nlic: learned l-infinity-constrained near-lossless image compression."""

__version__ = "0.1.0"
