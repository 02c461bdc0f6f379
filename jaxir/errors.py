"""Exceptions raised for bad user input, with messages meant to be read by a person."""


class JaxirInputError(ValueError):
    """An input image, array or file cannot be used as given; the message says why and what to do."""


class ImageLoadError(JaxirInputError):
    """A file could not be read as an image."""
