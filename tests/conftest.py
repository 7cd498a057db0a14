import os

from hypothesis import HealthCheck, settings

# A quick profile for `make test`; SELARAS_HYPOTHESIS=thorough digs deeper.
settings.register_profile("default", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SELARAS_HYPOTHESIS", "default"))
