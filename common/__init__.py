"""Shared by publisher and bridge: the reading, its JSON form and validation, topics, settings."""
