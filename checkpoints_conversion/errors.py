"""Conversion errors: one line each, naming the file or key at fault."""

from jaxir.errors import JaxirInputError


class ConversionError(JaxirInputError):
    """A checkpoint cannot be converted as asked (wrong file, wrong model, missing or mismatched tensors)."""
