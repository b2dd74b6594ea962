"""What runs beside each TorchServe: the model agent and the replica's readiness rule.
The serve image copies this package and core/ only."""
