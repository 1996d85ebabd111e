"""The exception hierarchy. The CLI turns any BertpressError into one line and exit code 2.

Messages are bounded (`MAX_MESSAGE_CHARS`): an error that echoes a user's value (a YAML alias
bomb, a 50 MB "sentence") never prints megabytes. Values are echoed with `echo()`, which builds
a bounded repr without materialising the whole value first (`reprlib`).
"""

from __future__ import annotations

import errno
import reprlib
from typing import Any

MAX_MESSAGE_CHARS = 2000  # one line of an error; long enough for every message we write
MAX_ECHO_CHARS = 120  # one echoed value inside a message

_repr = reprlib.Repr()
_repr.maxstring = MAX_ECHO_CHARS
_repr.maxother = MAX_ECHO_CHARS
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8


def echo(value: Any) -> str:
    """A repr of a user's value for an error message, bounded in size however big the value is."""
    text = _repr.repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 3] + "..."


def bound(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Cut the middle of an over-long message, keeping its start (the problem) and end (the fix)."""
    message = str(message)
    if len(message) <= limit:
        return message
    head, tail = limit * 3 // 4, limit // 5
    return f"{message[:head]} ...[{len(message) - head - tail} characters cut]... {message[-tail:]}"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters: how a library
    error is quoted inside our one-line messages (its full text can be pages long)."""
    text = str(exc)
    return text.splitlines()[0][:limit] if text else ""


class BertpressError(Exception):
    """Base class: a problem the user can fix. The message names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(bound(message), *args)


class ConfigError(BertpressError, ValueError):
    """A configuration value is invalid (wrong type, out of range, unknown key)."""


class InputError(BertpressError):
    """Input data or paths are invalid (missing file, malformed rows, label mismatch)."""


class ArtifactError(BertpressError):
    """A directory or file is not a (finished, readable) bertpress artifact or model."""


class ParityError(BertpressError):
    """An exported or compressed model does not match its source within tolerance."""


class DeviceError(BertpressError):
    """The requested device or runtime is not available here."""


class UnsafeInputError(InputError):
    """An input would run code or read outside its directory (pickle, remote code, external data)."""


class OwnershipError(InputError):
    """An output location holds something bertpress did not write; it is never replaced."""


class DiskFullError(BertpressError):
    """A write failed because the filesystem is full (or over quota)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `finally`/staging clean-up runs; exit code 143."""

    exit_code = 143


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library wrapped it in its own exception type."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_terminated = False  # set by the SIGTERM handler; read by `check_terminated` (see there)
_hook_installed = False


def check_terminated() -> None:
    """Raise `Terminated` if SIGTERM arrived, even when its first raise was swallowed.

    The handler's `raise` lands wherever the main thread is; inside a `__del__` or a weakref
    callback Python prints "Exception ignored" and carries on (seen in CI: a regex object's
    `__del__` ate it and the export published and exited 0). The flag stays set, and whatever is
    about to make an output final (`artifact._staged_output`) calls this first."""
    if _terminated:
        raise Terminated()


def _unraisable(previous):
    """A `sys.unraisablehook` that re-delivers a swallowed `Terminated` instead of printing it.

    Re-delivery is a real SIGTERM to the main thread (`pthread_kill`: it also wakes a sleep or a
    blocking read, which `_thread.interrupt_main` does not), sent from a timer a moment later so
    it lands after this hook has returned, not inside it."""
    import signal
    import threading

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            return previous(unraisable)
        main = threading.main_thread().ident
        timer = threading.Timer(0.05, signal.pthread_kill, args=(main, signal.SIGTERM))
        timer.daemon = True
        timer.start()
        return None

    return hook


def raise_on_sigterm():
    """Turn SIGTERM into `Terminated` in the main thread; returns the previous handler (or None
    off the main thread) so a caller running in-process can put it back."""
    import signal
    import sys
    import threading

    global _terminated, _hook_installed
    if threading.current_thread() is not threading.main_thread():
        return None
    _terminated = False  # a new command in this process starts unterminated

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        global _terminated
        _terminated = True
        raise Terminated()

    if not _hook_installed:  # once per process: in-process callers (tests) run many commands
        sys.unraisablehook = _unraisable(sys.unraisablehook)
        _hook_installed = True
    return signal.signal(signal.SIGTERM, handler)
