"""Imports every model and guide module so that they register themselves."""
from . import frnn  # noqa: F401
from . import srnn  # noqa: F401
from . import guides  # noqa: F401
from . import srnns  # noqa: F401
from . import dmm  # noqa: F401
from . import autoregressive, delta  # noqa: F401
