"""The errors a user can fix: a bad option or config value, a missing folder, weight file or adapter.

Library code raises a :class:`UserError` (or a subclass) with a message that names the file, folder or option and
says what was expected. The command line (``main.py``) prints such an error as one line ``error: <message>`` and
exits with status 2, without a stack trace; any other exception is a bug and keeps its traceback.

Every layer may import this module (it imports nothing of the project).
"""

from __future__ import annotations

__all__ = ["ConfigError", "UserError", "user_error_cause"]


class UserError(Exception):
    """An error the user fixes by changing a config value, an option, a folder or a file (the message says how)."""


class ConfigError(UserError, ValueError):
    """A config value the code cannot work with (the message names the option and the values it accepts)."""


def user_error_cause(err: BaseException | None) -> UserError | None:
    """The :class:`UserError` behind ``err``, following ``__cause__`` / ``__context__``: jsonargparse re-raises an
    error of nested class instantiation as ``ValueError: Does not validate against any of the Union subtypes``,
    and Lightning re-raises errors of its hooks, with the original error in the chain."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
