"""pyro_srnn: a Pyro model zoo of stochastic recurrent networks and their autoregressive baselines.

Models are Pyro model/guide pairs (``pyro_srnn.models``), trained by SVI with
``Trace_ELBO`` or ``TraceMeanField_ELBO`` (``pyro_srnn.train``) on the study's data
sets (``pyro_srnn.data``). See README.md and docs/.
"""
__version__ = "0.1.0"
