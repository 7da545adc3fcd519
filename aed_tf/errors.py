"""Errors a user can act on. The CLI prints their message alone; any other exception is a bug
and keeps its traceback."""


class UserError(Exception):
    """Bad input or setup that the user can fix."""


class InputError(UserError, ValueError):
    """A bad value: a parameter, a file's content, a manifest or a split."""
