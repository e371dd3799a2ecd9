"""Sub-commands of ``nlic``; each module exposes ``register(subparsers)``."""
