"""The latentflow error family.

Every error raised on bad input derives from :class:`LatentflowError` and from
the builtin it refines (``ValueError``, ``OSError``, ...), so callers can catch
either. Messages state the rule, the expected value and the value got:
``"in_channels must be > 0, got: -3"``.
"""

from __future__ import annotations


class LatentflowError(Exception):
    """Base class of every error latentflow raises on purpose."""


class ConfigError(LatentflowError, ValueError):
    """A config has an unknown key, a value of the wrong type, or a bad value."""


class InputError(LatentflowError, ValueError):
    """A tensor given to a model does not fit it (rank, channels, size, finiteness)."""


class CheckpointError(LatentflowError, ValueError):
    """A checkpoint cannot be found, is unsafe to load, or does not match its config."""


class NotSupportedError(LatentflowError, NotImplementedError):
    """The model family has no such entrypoint (e.g. ``sample`` without a prior)."""


class ShardReadError(LatentflowError, OSError):
    """An input shard is truncated or unreadable."""


class CodecMismatchError(LatentflowError, ValueError):
    """Latents written by one encoder are about to be mixed with another's."""


def one_line(err: BaseException, typed: bool = True) -> str:
    """An error as one line for a terminal: ``Type: message`` (``typed``) with its whitespace collapsed; a Ray
    task error shows the latentflow error it carries."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, LatentflowError):
        err = cause
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if typed else text
