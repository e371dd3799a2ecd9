"""numba, as the compiled kernels of this package import it (``from nlic.compiled import numba``).

A process's first compiled call (a cache load included) sets numba's CPU target up, and that imports
``numba.np.arraymath``, which imports ``scipy.linalg`` (0.2 s of a fresh ``nlic decompress`` on
two cores) only to decide whether ``np.correlate`` / ``np.convolve`` in compiled code may call BLAS.
No kernel here calls them (nor any other BLAS routine), so that module is imported once with the
probe answered "no"; numba's other linear algebra still finds SciPy when someone's code uses it.
"""

from __future__ import annotations

import sys

import numba
import numba.np.linalg as _linalg

__all__ = ["numba"]


def _import_arraymath_without_blas_probe() -> None:
    if "numba.np.arraymath" in sys.modules:  # (too late: imported already, by numba's own first compile)
        return
    probe = _linalg.ensure_blas

    def no_blas() -> None:
        raise ImportError("BLAS not probed for np.correlate / np.convolve (no nlic kernel calls them)")

    _linalg.ensure_blas = no_blas
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        _linalg.ensure_blas = probe


_import_arraymath_without_blas_probe()
