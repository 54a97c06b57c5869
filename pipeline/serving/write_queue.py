"""Writing one input's outputs all or none, and doing it in a background thread while the next input is read.

An input (one radiograph) has a list of outputs to write: the volume, its preview, and whatever
else a caller adds (a JSON sidecar, one volume per knee). Each output is an :data:`OutputJob`,
a function that writes one file or folder atomically (:mod:`xray2mri.pipeline.atomic`) and
returns its path. :func:`write_all_or_none` runs one input's jobs in order and, when one fails,
removes the outputs already written for that input, so an input has all its outputs or none.

:class:`BackgroundWriter` runs :func:`write_all_or_none` in one worker thread, input after
input, in the order they were submitted, while the caller loads and runs the network on the
next input (gzip and PNG encoding release the GIL). At most ``depth`` inputs wait, so memory
stays bounded. Each input's outcome (its paths, or the exception that stopped it) comes back
as a :class:`WriteResult`, so errors are still reported per input.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OutputJob", "WriteResult", "write_all_or_none", "BackgroundWriter"]

#: Writes one output (file or folder) atomically and returns its path.
OutputJob = Callable[[], Path]

_STOP = object()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_all_or_none(jobs: Sequence[OutputJob]) -> list[Path]:
    """Run ``jobs`` in order and return the paths they wrote; if one fails, remove the others' and re-raise."""
    written: list[Path] = []
    try:
        for job in jobs:
            written.append(Path(job()))
    except BaseException:
        for path in written:
            _remove(path)
        raise
    return written


@dataclass
class WriteResult:
    """The outcome of one input's writes: the paths written, or the error that left none of them."""

    key: Any
    outputs: list[Path] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0


class BackgroundWriter:
    """Write each submitted input's outputs (all or none) in one background thread, in submission order.

    Args:
        depth: how many inputs may wait to be written; :meth:`submit` blocks beyond that.

    Example::

        with BackgroundWriter() as writer:
            for path in inputs:
                writer.submit(path, jobs_for(path))       # returns at once (unless depth inputs wait)
                for done in writer.finished():            # outcomes so far, in order
                    report(done.key, done.outputs, done.error)
            for done in writer.close():                   # the rest, once everything is written
                report(done.key, done.outputs, done.error)

    Leaving the ``with`` block on an exception (e.g. Ctrl-C) lets the input being written finish
    (its files are atomic and all-or-none), drops the inputs still waiting, and re-raises.
    """

    def __init__(self, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._done: deque[WriteResult] = deque()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, name="xray2mri-writer", daemon=False)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            key, jobs = item
            if self._cancel.is_set():
                continue
            t0 = time.perf_counter()
            try:
                outputs = write_all_or_none(jobs)
            except BaseException as exc:  # reported per input by the caller, never lost in the thread
                self._done.append(WriteResult(key, error=exc, seconds=time.perf_counter() - t0))
            else:
                self._done.append(WriteResult(key, outputs, seconds=time.perf_counter() - t0))

    def submit(self, key: Any, jobs: Sequence[OutputJob]) -> None:
        """Queue one input's outputs (``key`` identifies it in its :class:`WriteResult`)."""
        if not self._thread.is_alive():
            raise RuntimeError("this BackgroundWriter is closed")
        self._queue.put((key, list(jobs)))

    def finished(self) -> list[WriteResult]:
        """The outcomes completed since the last call, in submission order (does not wait)."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def close(self, cancel: bool = False) -> list[WriteResult]:
        """Wait until every submitted input is written (``cancel``: only the one in progress); the remaining outcomes."""
        if cancel:
            self._cancel.set()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        return self.finished()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(cancel=exc_type is not None)
