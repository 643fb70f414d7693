"""Errors that the CLI turns into one line on stderr and exit code 2 (bad input, missing data)."""


class UserError(Exception):
    """Bad input from the user: the message names what is wrong and what is valid."""

    exit_code = 2


class DataUnavailable(UserError):
    """A dataset's files are missing, unreadable or corrupt; the message names the files and where."""
