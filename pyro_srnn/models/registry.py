"""Imports every model and guide module so that they register themselves."""
from . import frnn  # noqa: F401
from . import srnn  # noqa: F401
