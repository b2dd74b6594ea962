"""The prediction log: its store and outbox, what a row keeps (privacy), usage, export,
erasure and retention."""
