"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class NlicError(Exception):
    """An error caused by the user's input (bad file, bad argument, wrong model)."""

    exit_code = 2


class BitstreamError(NlicError):
    """A .nlic file that is corrupt, truncated, foreign or from another model/version."""


class ModelError(NlicError):
    """A model/checkpoint file that is missing, corrupt or incompatible."""


class ImageError(NlicError):
    """An input image that cannot be read or is of an unsupported kind."""
