"""Progressive delivery of a model version: a weighted canary or shadow copies, guarded.

A rollout sends a share of unpinned traffic to a registered candidate version
(canary: the candidate serves it), or copies a share to it after the default has
answered (shadow). The parts, each in its own module:
- state: the Rollout and who falls in the candidate's share (the split, stickiness);
- guard: the rules that end a misbehaving rollout, as pure functions over log rows;
- store: the rollout rows in the prediction-log database, read by every process,
  the guard's review and the figures per arm;
- control: what operators do, for the admin routes and the CLI alike.
"""
