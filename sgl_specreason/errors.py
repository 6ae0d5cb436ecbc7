"""Errors written for the person at the terminal: each names what is wrong and what would be right."""


class SpecReasonError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigError(SpecReasonError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class InputError(SpecReasonError, ValueError):
    """A problem (question) cannot be used as given: empty, not text, too long."""


class ModelError(SpecReasonError):
    """A model cannot be found, installed, verified or converted."""


class RuntimeStartError(SpecReasonError):
    """A local SGLang server could not be started."""


class RuntimeCallError(SpecReasonError):
    """A request to an SGLang runtime failed."""


class RuntimeUnavailableError(RuntimeCallError):
    """The runtime cannot be reached (refused, reset, unknown host)."""


class RuntimeServerError(RuntimeCallError):
    """The runtime answered with a server error (HTTP 5xx)."""


class RuntimeTimeoutError(RuntimeCallError):
    """The runtime accepted the request but did not answer in time."""


class PromptTooLongError(RuntimeCallError, InputError):
    """The runtime rejected a prompt longer than its context window."""
