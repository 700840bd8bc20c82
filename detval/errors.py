"""The one base class for errors a user can cause (bad files, bad settings); the CLI prints them without a traceback."""


class DetvalError(Exception):
    """A problem with the user's input, stated with the file (and line) it comes from."""
