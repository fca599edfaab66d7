"""Exceptions of the kit.

:class:`GVSLInputError` is bad user input (files, parameters), reported without a traceback by the
CLI; :class:`NonFiniteLossError` is a training run that diverged, which keeps its traceback.
"""

__all__ = ["GVSLInputError", "NonFiniteLossError"]


class GVSLInputError(ValueError):
    """Input the user can fix: a bad file, folder or parameter. The message names it."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""
