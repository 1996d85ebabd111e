"""The exception hierarchy. The CLI turns any BertpressError into one line and exit code 2."""


class BertpressError(Exception):
    """Base class: a problem the user can fix. The message names the problem and the fix."""

    exit_code = 2


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


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters: how a library
    error is quoted inside our one-line messages (its full text can be pages long)."""
    text = str(exc)
    return text.splitlines()[0][:limit] if text else ""
