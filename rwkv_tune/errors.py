"""The error types users see: a message that names the thing, the value, and the fix.

The CLI prints a `UserError` as one red line and exits with its `exit_code` (2; 3 for a
`ResourceError`); anything else is a bug and gets a traceback (always with `--debug`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A mistake the user can fix: bad input, unsupported file, impossible config."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        if self.fix:
            return f"{self.message.rstrip('.')}. {self.fix}"
        return self.message


class UnsupportedModelError(UserError):
    """The file is readable but is not a model rwkv-tune can train (wrong family, variant, shape)."""


class ModelFileError(UserError):
    """The file cannot be read as a model: missing, empty, truncated, unsafe or the wrong format."""


class ConfigError(UserError):
    """A preset or option value is invalid."""


class ConfigErrors(ConfigError):
    """Several preset or option mistakes found in one pass, reported together (each with its fix)."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problems: " + "; ".join(e.one_line() for e in self.errors))

    def lines(self) -> list[str]:
        return [e.one_line() for e in self.errors]


def raise_all(errors: list[ConfigError]) -> None:
    """Raise nothing, the one error, or all of them as ConfigErrors (nested ConfigErrors are flattened)."""
    flat = [one for e in errors for one in (e.errors if isinstance(e, ConfigErrors) else [e])]
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise ConfigErrors(flat)


@contextmanager
def collecting(errors: list[ConfigError]) -> Iterator[None]:
    """Add a ConfigError raised inside the block to `errors` instead of stopping at it."""
    try:
        yield
    except ConfigError as exc:
        errors.append(exc)


class DataError(UserError):
    """Training data is missing, malformed or incompatible with the model."""


class ResourceError(UserError):
    """The machine ran out of something (GPU memory, disk space): the input may be fine, the run needs room."""

    exit_code = 3
