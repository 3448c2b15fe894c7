"""The one error type for bad input.

Anything a user can cause (a missing file, a malformed row, an unknown name, a bad flag value)
raises :class:`UserError` with one line naming the problem. The CLI prints it as
``error: <message>`` and exits with code 2, no traceback. Bugs stay ordinary exceptions.
"""


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
