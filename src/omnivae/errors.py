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


def did_you_mean(word: object, choices) -> str:
    """' (did you mean 'mopoe'?)' for a near miss among `choices`, else ''."""
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
