"""The one error a declaration raises: it names the offending sub-expression and the reason."""
from __future__ import annotations


class DeclarationError(ValueError):
    """A malformed declaration. `.where` is the offending sub-expression, `.reason` says why."""

    def __init__(self, where: object, reason: str):
        self.where = where
        self.reason = reason
        super().__init__(f"in `{where}`: {reason}")
