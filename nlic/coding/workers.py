"""Where the tiles of one image are coded at once: threads, or this process and forked copies of it.

The coder's per-wavefront work is small NumPy, numba and torch calls, and about 60 % of a decode's
wall time holds Python's interpreter lock, so two threads code only about 1.5x faster than one.
A forked copy of the process has its own lock: on 2 cores three held-out photos decoded 5 % (tau 0)
and 11 % (tau 2) faster than on threads, in a fresh process as in a warm one.  The encoder stays
on threads: its work is less bound to the lock, and forked it was 1-4 % slower on the same photos.
The parent takes tiles too, so it is warm for the next image and the children start from its
warm state; the tiles go, costliest first, to whichever process is free.

Forking is only safe in a process whose other threads hold no locks the child could need, so it is
used only where this is the process's only Python thread, on Linux, for CPU work; elsewhere threads.
Either way the same calls run with the same inputs: the files are the same bytes.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from nlic.errors import NlicError


def can_fork() -> bool:
    """Whether forked workers are safe here: Linux, and no other Python thread running."""
    return sys.platform.startswith("linux") and threading.active_count() == 1 and hasattr(os, "fork")


class _Queue:
    """The indices of ``order`` handed out one at a time to this process and its forked children
    (a counter in shared memory): the costliest first, each to whichever worker is free."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)
        self.next = multiprocessing.get_context("fork").Value("l", 0)

    def __iter__(self) -> Iterator[int]:
        while True:
            with self.next.get_lock():
                k = self.next.value
                self.next.value = k + 1
            if k >= len(self.order):
                return
            yield self.order[k]


def run_forked(fn: Callable[..., Any], items: Sequence[tuple], order: Sequence[int], workers: int) -> dict[int, Any]:
    """``fn(*items[i])`` for every ``i`` of ``order`` (started in that order), on this process and
    ``workers - 1`` forked children that send their results back through pipes.  An error in a
    child is raised here (after this process's own work); a child that dies (e.g. killed for
    memory) is an error."""
    queue = _Queue(order)
    children: dict[int, int] = {}  # pid -> read end of its pipe, until reaped
    try:
        for _ in range(min(workers, len(order)) - 1):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: its items, then its results down the pipe, then exit at once
                os.close(read)
                _child(fn, items, queue, write)
            os.close(write)
            children[pid] = read
        results = {i: fn(*items[i]) for i in queue}
        for pid in list(children):
            payload = _read_all(children[pid])
            _, status = os.waitpid(pid, 0)
            os.close(children.pop(pid))
            if not payload or status != 0:
                raise NlicError(f"a worker process coding tiles died ({_describe(status)}); "
                                "try again with fewer threads (OMP_NUM_THREADS=1) or more memory")
            ok, value = pickle.loads(payload)
            if not ok:
                raise value
            results.update(value)
        return results
    finally:
        for pid, read in children.items():  # (after an error: stop and reap the others)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)


def _child(fn: Callable[..., Any], items: Sequence[tuple], queue: _Queue, write: int) -> None:
    """Run in the forked child; never returns (``os._exit``: none of the parent's exit handlers)."""
    code = 0
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            payload = pickle.dumps((True, {i: fn(*items[i]) for i in queue}))
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which raises it
        try:
            payload = pickle.dumps((False, err))
        except Exception:  # noqa: BLE001 - an error that does not pickle: its text
            payload = pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {err}")))
    try:
        with os.fdopen(write, "wb") as out:
            out.write(payload)
    except BaseException:  # noqa: BLE001 - the parent sees the pipe end early
        code = 1
    os._exit(code)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb", closefd=False) as f:
        return f.read()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
