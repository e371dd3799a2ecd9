"""Tiles decoded in this process and forked copies of it (nlic.coding.workers): the same images as
on threads, errors in a child raised in the parent, a dead child an error, never a fork beside
another thread."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from nlic.coding import workers
from nlic.errors import BitstreamError, NlicError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers run on Linux only")


def _pid_of(i: int) -> tuple[int, int]:
    return i * i, os.getpid()


def test_items_run_in_this_process_and_its_children() -> None:
    items = [(i,) for i in range(40)]
    results = workers.run_forked(_slow_pid_of, items, list(range(40)), 3)
    assert sorted(results) == list(range(40)) and all(results[i][0] == i * i for i in range(40))
    pids = {pid for _, pid in results.values()}
    assert os.getpid() in pids and len(pids) == 3  # every worker took some: handed out as they come free


def _slow_pid_of(i: int) -> tuple[int, int]:
    time.sleep(0.01)
    return _pid_of(i)


PARENT = os.getpid()


def _fails_in_child(i: int) -> int:
    if os.getpid() != PARENT:
        raise BitstreamError(f"file is corrupt (tile {i})")
    time.sleep(0.2)  # (the child takes the next item meanwhile)
    return i


def test_an_error_in_a_child_is_raised_in_the_parent() -> None:
    with pytest.raises(BitstreamError, match=r"corrupt \(tile \d\)"):
        workers.run_forked(_fails_in_child, [(0,), (1,), (2,), (3,)], [0, 1, 2, 3], 2)


def _dies_in_child(i: int) -> int:
    if os.getpid() != PARENT:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel kills a process out of memory
    time.sleep(0.2)
    return i


def test_a_child_that_dies_is_a_clear_error() -> None:
    with pytest.raises(NlicError, match="worker process coding tiles died .signal 9"):
        workers.run_forked(_dies_in_child, [(0,), (1,), (2,), (3,)], [0, 1, 2, 3], 2)


def test_no_fork_beside_another_thread() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not workers.can_fork()
    finally:
        stop.set()
        other.join()
    assert workers.can_fork() == (threading.active_count() == 1)  # (an earlier test may leave a thread)


@pytest.mark.parametrize("tau", [0, 2])
def test_forked_decoding_gives_the_images_threads_give(photos, monkeypatch, tau: int) -> None:
    """A photo of several tiles decoded on 3 workers: forked (the decoder's default here) and on
    threads, the same image within tau, and the forked path really taken."""
    from nlic.api import Codec
    from nlic.coding.image import ImageCodec
    from nlic.model_io import load_model
    from nlic.model_store import DEFAULT_MODEL

    calls = []
    real = workers.run_forked
    monkeypatch.setattr("nlic.coding.image.run_forked", lambda *a: calls.append(1) or real(*a))
    # (idle threads an earlier test may leave in this process hold no lock the workers need)
    monkeypatch.setattr("nlic.coding.image.can_fork", lambda: True)
    codec = Codec(ImageCodec(load_model(DEFAULT_MODEL), tile=64, threads=3))
    codec.image_codec.jxl_tiles = False
    img = photos["astronaut"]  # 96 x 128: six tiles
    data = codec.compress(img, tau).data
    forked = codec.decompress(data).pixels
    assert calls, "the decoder did not fork"
    codec.image_codec.fork_workers = False
    threaded = codec.decompress(data).pixels
    assert np.array_equal(forked, threaded)
    assert int(np.abs(forked.astype(np.int16) - img.astype(np.int16)).max()) <= tau
