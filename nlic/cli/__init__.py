"""Command-line entry points: ``nlic`` (file codec, bench, report), ``nlic-train``, ``nlic-eval``."""
