"""The one error type of configuration problems."""

from gspo.errors import InputError


class ConfigError(InputError):
    """A configuration problem; the message names the key and, for YAML input, the file and line."""
