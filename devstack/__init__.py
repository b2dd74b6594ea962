"""The service's real processes on free loopback ports (TorchServe with its model agent,
granian, PostgreSQL, Redis, an OTLP receiver) and what drives them: the e2e tests and
the bench start their stacks from here."""
