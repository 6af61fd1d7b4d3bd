"""Worker processes that render casebook documents (HTML and PDF) sent to them.

Each worker is a fresh interpreter reading pickled documents on its standard input and
answering one line per document, in order: empty when its files are written, else why not.
Not multiprocessing's pool: its spawn imports the parent's main module again in each worker
(under the CLI, the command line and the web stack: 57 MB before rendering anything) and
starts a resource tracker process beside them (13 MB), neither of which a worker needs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import IO

from infra.parent_death import die_with_parent
from projections.casebook_doc.model import CasebookDocument

CHILD = "from projections.casebook_doc.workers import serve; serve()"


class RenderFailed(RuntimeError):
    """A worker could not render a document: its error, or how the worker ended."""


class RenderWorker:
    """One worker process; :meth:`submit` hands it a document, rendered in turn."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, str(os.getpid())],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._pending: deque[Future[None]] = deque()
        self._lock = threading.Lock()
        self._ended = False  # the worker's answers ended: nothing more is taken
        # Sent by a thread of its own: a document waits in the pipe until the worker is done
        # with the one before, which the reading process should not wait for.
        self._outbox: queue.Queue[tuple[CasebookDocument, Path, datetime] | None] = (
            queue.Queue())
        self._threads = [threading.Thread(target=self._send, daemon=True,
                                          name="casebook-worker-send"),
                         threading.Thread(target=self._receive, daemon=True,
                                          name="casebook-worker-receive")]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Documents handed to this worker and not rendered yet (a future leaves the
        pending ones before it is settled)."""
        with self._lock:
            return len(self._pending)

    def submit(self, document: CasebookDocument, directory: Path,
               created_at: datetime) -> Future[None]:
        """Have the worker write ``document``'s files into ``directory``; the future is done
        when they are written (or holds :class:`RenderFailed`)."""
        future: Future[None] = Future()
        with self._lock:
            if self._ended:
                raise RenderFailed(f"the casebook worker ended ({self.process.poll()})")
            self._pending.append(future)
        self._outbox.put((document, directory, created_at))
        return future

    def stop(self) -> None:
        """End the worker now, whatever it was still given."""
        self.process.terminate()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join()

    def _send(self) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None  # Popen with stdin=PIPE
        with contextlib.suppress(BrokenPipeError, OSError), stdin:
            while (item := self._outbox.get()) is not None:
                pickle.dump(item, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()

    def _receive(self) -> None:
        stdout: IO[bytes] | None = self.process.stdout
        assert stdout is not None  # Popen with stdout=PIPE
        with stdout:
            for line in stdout:
                with self._lock:
                    future = self._pending.popleft()
                error = line.decode(errors="replace").strip()
                if error:
                    future.set_exception(RenderFailed(error))
                else:
                    future.set_result(None)
        code = self.process.wait()
        with self._lock:
            self._ended = True
            left, self._pending = list(self._pending), deque()
        for future in left:
            future.set_exception(RenderFailed(f"the casebook worker ended with exit code "
                                              f"{code} before rendering its document"))


def serve() -> None:
    """A worker's process: render each document read from standard input, answer a line for
    each on standard output, until the input ends."""
    from projections.casebook_doc import render  # the package imports this module

    die_with_parent(int(sys.argv[1]))
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever a library prints: not here
    documents = sys.stdin.buffer
    with answers:
        while True:
            try:
                document, directory, created_at = pickle.load(documents)
            except EOFError:
                return
            try:
                render(document, directory, created_at)
                answers.write(b"\n")
            except Exception as e:
                answers.write(" ".join(f"{type(e).__name__}: {e}".split()).encode() + b"\n")
            answers.flush()
