"""Model-side code: the TorchServe handler and the archive builder."""
