"""The one exception hierarchy of VC.

Every error a user or operator can cause is a :class:`VcError` with a message written for them.
Entry points print ``str(err)`` on one line and exit with ``err.exit_code``; anything that is not a
``VcError`` is a bug and is logged with its traceback.
"""


class VcError(Exception):
    """Base class. ``msg_fmt`` is formatted with the keyword arguments given to the constructor."""

    msg_fmt = "VC error"
    exit_code = 1

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            message = self.msg_fmt % kwargs if kwargs else self.msg_fmt
        super().__init__(message)


class ConfigError(VcError):
    """A missing or invalid configuration key (exit code 2: the operator must fix a file)."""

    exit_code = 2

    def __init__(self, path, key, problem):
        self.path, self.key, self.problem = path, key, problem
        super().__init__("config error in %s: %s: %s" % (path, key, problem))


class UsageError(VcError):
    """Bad command-line arguments (exit code 2)."""

    exit_code = 2


class ValidationError(VcError):
    """Bad input for a reservation. ``errors`` maps a field name to its message."""

    def __init__(self, errors):
        self.errors = dict(errors)
        super().__init__("; ".join("%s: %s" % (k, v) for k, v in self.errors.items()))


class CapacityError(VcError):
    """Admission control refused a reservation; the message says what is short and when."""


class NotFound(VcError):
    msg_fmt = "no such %(what)s: %(key)s"


class InvalidTransition(VcError):
    msg_fmt = "reservation %(rack)s is %(state)s: cannot %(action)s"


class SchemaError(VcError):
    """The database schema is missing or older than this VC."""

    exit_code = 2


class DatabaseError(VcError):
    """The database could not be reached or refused us (after retries)."""


class HypervisorError(VcError):
    """A libvirt call or a command on a host failed. ``code`` is libvirt's error code, if any."""

    msg_fmt = "host %(host)s: cannot %(op)s: %(detail)s"

    def __init__(self, message=None, code=None, **kwargs):
        self.code = code
        super().__init__(message, **kwargs)
