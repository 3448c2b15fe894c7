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


class EmptyInputError(UserError):
    """A stage's input (or result) holds no rows — e.g. no sample survived filtering.

    On the CLI it is an ordinary bad-input error (one line, exit 2). Inside a pipeline the runner
    records the stage as *empty* (a complete manifest with ``empty: true``) and marks the stages
    that depend on it empty too, so one failed data variant does not stop the others; the report
    shows that variant as "no data".
    """


def os_error_line(e: OSError) -> str:
    """One line for an operating-system failure a user can cause or fix (read-only or full disk,
    a file where a directory belongs, no permission): ``PATH: reason``."""
    reason = e.strerror or str(e) or type(e).__name__
    text = f"{e.filename}: {reason}" if e.filename is not None else f"writing the output failed: {reason}"
    return " ".join(text.split())
