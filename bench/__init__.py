"""`make bench`: in-process vs TorchServe direct vs through the gateway, side by side."""
