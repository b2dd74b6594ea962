"""The model control plane: versions as operators see them, rollouts, and the control
state predictions read."""
