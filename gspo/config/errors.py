"""The one error type of configuration problems."""


class ConfigError(ValueError):
    """A configuration problem; the message names the key and, for YAML input, the file and line."""
