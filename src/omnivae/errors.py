"""The library's own error types: every documented failure raises one of these."""


class OmniVAEError(Exception):
    """Base class of every error omnivae raises on purpose."""


class InputError(OmniVAEError, ValueError):
    """Data handed to omnivae has the wrong shape, dtype, values or names."""


class ConfigError(OmniVAEError, ValueError):
    """A configuration is invalid: unknown key, wrong type, impossible combination."""


class ModelFileError(OmniVAEError, OSError):
    """A saved model folder or checkpoint is missing, truncated, tampered with or unsafe."""


class TrainingError(OmniVAEError, RuntimeError):
    """Training cannot go on (for example a non-finite loss); the last good checkpoint is kept."""
