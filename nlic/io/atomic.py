"""Safe output files: write to a temporary file next to the target, fsync, then rename.

A reader never sees a half-written output, a failed or interrupted write leaves neither a partial
target nor a stray temporary file, and an existing file is only replaced when ``force`` is given.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nlic.errors import NlicError

PathLike = str | os.PathLike[str]

__all__ = ["atomic_output", "atomic_write_bytes", "check_not_same_file", "check_output_path"]


def _exists_error(target: Path) -> NlicError:
    return NlicError(f"output file {target} exists; use --force to overwrite")


def check_output_path(path: PathLike, force: bool = False) -> Path:
    """Check that ``path`` can be written as an output file; return it as a :class:`Path`.

    Raises :class:`NlicError` if it exists (and not ``force``), is a directory, or its directory
    is missing.  Call it before expensive work to fail early; :func:`atomic_output` calls it too.
    """
    target = Path(path)
    if target.is_dir():
        raise NlicError(f"output path {target} is a directory")
    if (target.exists() or target.is_symlink()) and not force:
        raise _exists_error(target)
    parent = target.parent
    if not parent.is_dir():
        raise NlicError(f"output directory {parent} does not exist (for {target})")
    return target


def check_not_same_file(input_path: PathLike, output_path: PathLike) -> None:
    """Raise :class:`NlicError` if ``output_path`` names the same file as ``input_path``.

    Catches identical paths, different spellings of one path, symlinks and hard links.
    """
    inp, out = Path(input_path), Path(output_path)
    same = False
    try:
        same = os.path.samefile(inp, out)
    except OSError:  # one of them does not exist (yet): compare the resolved names instead
        try:
            same = inp.resolve() == out.resolve()
        except OSError:
            same = os.path.abspath(inp) == os.path.abspath(out)
    if same:
        raise NlicError(f"output {out} is the same file as the input {inp}; choose another output path")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Best effort: make the rename itself durable (not possible on every OS/filesystem)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, target: Path, force: bool) -> None:
    """Move the finished temporary file onto ``target`` in one atomic step."""
    if force:
        os.replace(tmp, target)
        return
    # No-clobber: link() fails if the target appeared meanwhile, where replace() would overwrite it.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists_error(target) from None
    except OSError:  # filesystem without hard links: re-check, then rename
        if target.exists() or target.is_symlink():
            raise _exists_error(target) from None
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(path: PathLike, force: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path in the target's directory; write the output there.

    On normal exit the temporary file is fsynced and renamed onto ``path``; on any exception
    (including KeyboardInterrupt) it is deleted and ``path`` is left untouched.  The temporary
    name ends with the target's suffix, so writers that pick a format by extension still work.
    Raises :class:`NlicError` if ``path`` exists and ``force`` is false.
    """
    target = check_output_path(path, force)
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
        )
    except OSError as exc:
        raise NlicError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.is_file():
            raise NlicError(f"internal error: temporary output for {target} was not written")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        _fsync_file(tmp)
        _commit(tmp, target, force)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes, force: bool = False) -> None:
    """Atomically write ``data`` to ``path`` (see :func:`atomic_output`)."""
    try:
        with atomic_output(path, force) as tmp, open(tmp, "wb") as f:
            f.write(data)
    except NlicError:
        raise
    except OSError as exc:
        raise NlicError(f"cannot write {path}: {exc.strerror or exc}") from None
