"""Exceptions for bad user input (files, parameters), reported without a traceback by the CLI."""

__all__ = ["GVSLInputError"]


class GVSLInputError(ValueError):
    """Input the user can fix: a bad file, folder or parameter. The message names it."""
