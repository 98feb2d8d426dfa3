"""Worker threads that read the journal, and the messages they post back (Progress, Failed).

Every journal read runs in a Textual thread worker. When the app quits,
Textual drops its screens (a running restore cancels itself then) and the
app closes the journal; a thread still inside an LMDB transaction at that
moment would fail or worse. :func:`journal_worker` wraps ``@work`` so each
such thread holds a lease on :class:`Leases`, and the app waits for the
leases to end (a few seconds at most) before it closes the journal.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from textual import work
from textual.message import Message
from textual.message_pump import MessagePump

from tui.model.errors import describe_error

F = TypeVar("F", bound=Callable[..., Any])


class Leases:
    """A count of threads using the journal; closed once the app is on its way out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._closed = False

    def acquire(self) -> bool:
        """Start using the journal; False once closed (the caller must not touch it)."""
        with self._lock:
            if self._closed:
                return False
            self._active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._active -= 1

    def close(self) -> None:
        """No new lease from now on."""
        with self._lock:
            self._closed = True

    @property
    def active(self) -> int:
        with self._lock:
            return self._active


class Progress(Message, bubble=False):
    """How far a long worker (a restore, a verify) got: ``done`` of ``total`` bytes."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done = done
        self.total = total


def progress_poster(widget: MessagePump, every_s: float = 0.1) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for the journal that posts :class:`Progress` to ``widget``.

    The journal reports per chunk; the screen needs far less: at most one
    message per ``every_s`` seconds, and always the last one.
    """
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or done >= total:
            last[0] = now
            widget.post_message(Progress(done, total))

    return progress


class Failed(Message, bubble=False):
    """A worker's read of the journal failed; posted to the screen (or app) whose worker it was.

    ``what`` says what the worker was doing ('reading points'), ``text`` is
    the one-line reason (:func:`tui.model.errors.describe_error`). It does not
    bubble: each screen shows its own failures its own way.
    """

    def __init__(self, what: str, text: str) -> None:
        super().__init__()
        self.what = what
        self.text = text


def journal_worker(group: str = "default", *, failure: str | None = None,
                   ignore: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
    """``@work(thread=True, exclusive=True, group=group)`` for a method that reads the journal.

    The method runs under a lease from ``self.app.leases``; once the app has
    closed its leases the method is skipped (the journal is going away).
    With ``failure`` (what the method does, for the message), an exception
    becomes a :class:`Failed` posted to ``self``, never a traceback; one of
    ``ignore`` (a superseded worker's) ends the method quietly.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def leased(self: Any, *args: Any, **kwargs: Any) -> Any:
            leases: Leases = self.app.leases
            if not leases.acquire():
                return None
            try:
                return fn(self, *args, **kwargs)
            except ignore:
                return None
            except Exception as exc:
                if failure is None:
                    raise
                self.post_message(Failed(failure, describe_error(exc)))
                return None
            finally:
                leases.release()

        return work(thread=True, exclusive=True, group=group)(leased)  # type: ignore[return-value]

    return decorate
