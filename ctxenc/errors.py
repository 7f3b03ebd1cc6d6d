"""The one exception type for user mistakes.

A `UserError` carries one sentence that names the problem and the fix. The CLI prints it and
exits with code 2, without a traceback (unless `--debug`).
"""


class UserError(Exception):
    """A mistake in the user's input (data, arguments, files): one sentence, exit code 2."""
