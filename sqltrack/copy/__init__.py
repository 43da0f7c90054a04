"""Copying runs between databases (``sqltrack sync``)."""
