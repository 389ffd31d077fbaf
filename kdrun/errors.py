"""User-facing errors: the CLI prints these as one line, without a traceback."""


class UserError(Exception):
    """A mistake in user input (grid, flag, checkpoint, URL). The message is shown as is."""


class ConfigError(UserError):
    """A job's configuration cannot run; retrying will not help, so the job fails at once."""
