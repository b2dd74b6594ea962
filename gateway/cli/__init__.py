"""The operators' command lines: thin entry points over the domain services."""
