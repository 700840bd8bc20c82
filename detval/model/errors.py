"""The error every weights problem raises (unreadable, unsafe, unknown architecture, mismatched)."""
from detval.errors import DetvalError


class CheckpointError(DetvalError):
    """A weights file that cannot be loaded (unreadable, unsafe, unknown architecture, mismatched)."""
