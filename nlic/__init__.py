"""nlic: learned l-infinity-constrained near-lossless image compression."""

from nlic.utils.warning_filters import filter_import_warnings

__version__ = "0.1.0"

filter_import_warnings()  # before any submodule imports CompressAI (and torch_geometric with it)
