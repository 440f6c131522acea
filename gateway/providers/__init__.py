"""Translation between API shapes, one module per provider API shape: pure functions and
stream translators, no I/O. Which translator serves which (client API, provider) pair is
decided in `gateway.apis`."""
