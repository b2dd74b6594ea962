"""Build tools for model archives (never shipped in a .mar): weights, int8 variant, archive."""
