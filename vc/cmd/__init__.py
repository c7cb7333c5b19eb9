"""The command-line programs, one module each (:mod:`vc.cmd.vc_ctl`, :mod:`vc.cmd.vc_cron`,
:mod:`vc.cmd.vc_vlan`), and what they share: the parser, the command table, the context a
handler gets, and :func:`runcli`, the one error ladder.

Exit codes: 0 success, 1 refused or failed (one line on stderr), 2 usage or configuration error
(:class:`~vc.errors.VcError` carries its own ``exit_code``), 130 interrupted.

A program is a **command table** (name -> :class:`Command`: the handler and its arguments) and a
parser builder. Adding a subcommand is one table entry and one handler function::

    def key_list(ctx, args):
        rows = keys.list_all(ctx.db, ctx.who)
        return ctx.emit(rows, lambda out: ...)

    COMMANDS = {
        ...
        "key": Command(None, "owner SSH keys", sub={
            "list": Command(key_list, "your keys"),
            "add": Command(key_add, "add a key", args=[arg("file")]),
        }),
    }

A handler is ``handler(ctx, args) -> exit code`` (None means 0); it raises a ``VcError`` for
anything a user can cause and writes its result with :meth:`Context.emit` (``--json`` aware).
"""

import argparse
import json
import logging
import os
import pwd
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping, Optional, Sequence, Tuple

from vc import timeutil
from vc.errors import UsageError, VcError
from vc.numbers import NumberError, parse_int

LOG = logging.getLogger("vc")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message):
        raise UsageError("%s: %s (see '%s --help')" % (self.prog, message, self.prog))


# ------------------------------------------------------------------------ the command table
def arg(*names, **kw) -> Tuple[tuple, dict]:
    """One ``add_argument`` call, written down for a table entry: ``arg("rack")``,
    ``arg("--end", required=True)``."""
    return names, kw


@dataclass(frozen=True)
class Command:
    """One entry of a command table.

    :param run: ``run(ctx, args) -> int | None``; None for a command that only groups ``sub``.
    :param help: one line, shown in ``--help`` (also the subcommand's description).
    :param args: ``add_argument`` calls (see :func:`arg`), in order.
    :param setup: ``setup(parser)`` for what ``args`` cannot say (loops, groups); after ``args``.
    :param json: add ``--json`` (machine-readable output).
    :param schema: the database schema must be current before it runs (vc_ctl: not for
        ``db`` itself, nor for commands that use no database).
    :param sub: a nested table (``target add|list|...``): the subcommand's actions.
    """

    run: Optional[Callable]
    help: str = ""
    args: Sequence[Tuple[tuple, dict]] = ()
    setup: Optional[Callable[[argparse.ArgumentParser], None]] = None
    json: bool = True
    schema: bool = True
    sub: Optional[Mapping[str, "Command"]] = field(default=None)


def add_arguments(parser: argparse.ArgumentParser, cmd: Command) -> None:
    """``--json`` (when the command has it), its ``args``, then its ``setup``."""
    if cmd.json:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    for names, kw in cmd.args:
        parser.add_argument(*names, **kw)
    if cmd.setup:
        cmd.setup(parser)


def add_commands(parser: argparse.ArgumentParser, commands: Mapping[str, Command],
                 metavar: str = "COMMAND", dest: str = "cmd") -> None:
    """Subparsers from a command table (nested tables become ``ACTION`` subparsers). The
    chosen :class:`Command` ends up in ``args.command``."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    sub.required = True
    for name, cmd in commands.items():
        sp = sub.add_parser(name, help=cmd.help, description=cmd.help)
        add_arguments(sp, cmd)
        if cmd.sub:
            add_commands(sp, cmd.sub, metavar="ACTION", dest=dest + "_" + name)
        else:
            sp.set_defaults(command=cmd)


def subcommand_parser(prog: str, description: str) -> Callable[[Mapping[str, Command]], Parser]:
    """A parser builder for a program with subcommands (``vc_ctl.py COMMAND ...``)."""

    def build(commands):
        p = Parser(prog=prog, description=description)
        add_commands(p, commands)
        return p

    return build


def single_parser(prog: str, description: str, name: str
                  ) -> Callable[[Mapping[str, Command]], Parser]:
    """A parser builder for a program that is one command (``vc_cron.py [--now T]``): the
    table's entry ``name`` gives the arguments and the handler."""

    def build(commands):
        cmd = commands[name]
        p = Parser(prog=prog, description=description or cmd.help)
        add_arguments(p, cmd)
        p.set_defaults(command=cmd)
        return p

    return build


# ------------------------------------------------------------------------ what a handler gets
UID_MAX = 2 ** 32 - 2   # uid_t; (uid_t) -1 means "no uid"


def identity(uid: Optional[int] = None, environ: Optional[Mapping[str, str]] = None
             ) -> Tuple[str, bool]:
    """Who is acting and whether with root's rights: ``(user name, root)``.

    From the kernel, never from what the caller can set: the real uid (:func:`os.getuid`) and
    its name in the user database. Only when the real uid is 0 (root, or sudo really ran) does
    ``SUDO_UID`` name the person acting (events and ownership are theirs; the rights are
    root's). ``SUDO_USER``, ``USER`` and ``LOGNAME`` are never read.

    :param uid: the real uid (tests); default :func:`os.getuid`.
    :param environ: the environment (tests); default :data:`os.environ`.
    :raises VcError: the uid has no user name.
    """
    uid = os.getuid() if uid is None else uid
    environ = os.environ if environ is None else environ
    if uid == 0:
        try:
            caller = parse_int(environ.get("SUDO_UID", ""), "SUDO_UID", 0, UID_MAX)
            return pwd.getpwuid(caller).pw_name, True
        except (NumberError, KeyError):
            pass   # no sudo, or one naming no user: root itself
    try:
        return pwd.getpwuid(uid).pw_name, uid == 0
    except KeyError:
        raise VcError("cannot tell who you are: uid %d has no user name" % uid) from None


def actor_name(uid: Optional[int] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """Who is acting (see :func:`identity`)."""
    return identity(uid, environ)[0]


def _json_default(o):
    if isinstance(o, datetime):
        return timeutil.iso(o)
    raise TypeError(type(o).__name__)


def emit_json(obj, out) -> None:
    out.write(json.dumps(obj, default=_json_default, indent=2, sort_keys=True) + "\n")


class Context:
    """One run of a command: its output stream and, read when first asked for, the
    configuration (which also sets up logging), the database, the clock and who is acting.

    :param cfg: a parsed configuration (tests); default: :func:`vc.config.load`.
    :param now: a fixed time (tests); default: the clock when first asked.
    :param uid: the real uid (tests); default :func:`os.getuid` (see :func:`identity`).
    :param environ: the environment ``SUDO_UID`` is read from (tests); default ``os.environ``.
    """

    def __init__(self, prog: str, args, out=None, cfg=None, now=None, uid=None, environ=None):
        self.prog = prog
        self.args = args
        self.out = out or sys.stdout
        self._cfg = cfg
        self._logging = False
        self._db = None
        self._schema_checked = False
        self._now = now
        self._uid = os.getuid() if uid is None else uid
        self._environ = os.environ if environ is None else environ
        self._identity = None

    # -------------------------------------------------------------- configuration, database
    def config(self, quiet: bool = False, verbose: bool = False):
        """The configuration, loaded once; logging is set up the first time (see
        :func:`setup_logging` for ``quiet`` and ``verbose``)."""
        if self._cfg is None:
            from vc import config as vconfig

            self._cfg = vconfig.load()
        if not self._logging:
            setup_logging(self._cfg, quiet=quiet, verbose=verbose)
            self._logging = True
        return self._cfg

    @property
    def cfg(self):
        return self.config()

    def database(self, schema: bool = True):
        """The database (one :class:`vc.db.Database`); ``schema``: check it is current first
        (:class:`~vc.errors.SchemaError`, exit code 2, when it is not)."""
        if self._db is None:
            from vc.db import Database

            self._db = Database(self.cfg)
        if schema and not self._schema_checked:
            self._db.check_schema()
            self._schema_checked = True
        return self._db

    @property
    def db(self):
        return self.database()

    # -------------------------------------------------------------- who, when
    @property
    def now(self):
        if self._now is None:
            self._now = timeutil.utcnow()
        return self._now

    @property
    def who(self) -> str:
        """The user acting: the real uid's name (the sudo caller's when root runs under sudo)."""
        if self._identity is None:
            self._identity = identity(self._uid, self._environ)
        return self._identity[0]

    @property
    def root(self) -> bool:
        """The real uid is 0 (root, or under sudo); never anything the environment says."""
        return self._uid == 0

    @property
    def admin(self) -> bool:
        """root, or a user named in ``[site] admins``."""
        return self.root or self.who in self.cfg.site.admins

    def require_root(self, message: str) -> None:
        if not self.root:
            raise VcError(message)

    def require_admin(self, message: str) -> None:
        if not self.admin:
            raise VcError(message)

    def require_owner(self, owner: str, what: str) -> None:
        """Only ``owner`` or an admin: ``what`` says what belongs to ``owner``."""
        if owner != self.who and not self.admin:
            raise VcError("%s belongs to %s; only its owner or an admin may see or change it"
                          % (what, owner))

    def ctl(self, **kw):
        """A :class:`vc.ctl.Ctl` acting as this user; progress lines go to the log, and to
        stderr when it is a terminal."""
        from vc.ctl import Ctl

        tty = sys.stderr.isatty()

        def progress(msg):
            LOG.info("%s", msg)
            if tty:
                sys.stderr.write(msg + "\n")

        kw.setdefault("progress", progress)
        kw.setdefault("actor", self.who)
        return Ctl(self.cfg, self.db, **kw)

    # -------------------------------------------------------------- output
    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def emit(self, obj, text=None) -> int:
        """Write the result: ``obj`` as JSON with ``--json``; else ``text`` (a string, or a
        function that writes to the output stream). Returns 0."""
        if self.json:
            emit_json(obj, self.out)
        elif callable(text):
            text(self.out)
        elif text is not None:
            self.out.write(text)
        return 0

    def usage(self, message: str) -> UsageError:
        """A usage error (exit code 2) in the program's words: ``raise ctx.usage("...")``."""
        return UsageError("%s: %s" % (self.prog, message))

    def rack(self, s) -> int:
        """A RACK argument: a positive integer (else a usage error)."""
        return self.number(s, "RACK must be a positive integer up to %d" % RACK_MAX, 1, RACK_MAX)

    def number(self, s, message: str, lo: int, hi: int) -> int:
        """A numeric argument that is a usage error when bad (:func:`vc.numbers.parse_int`:
        ASCII digits only, bounded length): ``message``, then what was given."""
        try:
            return parse_int(s, message, lo, hi)
        except NumberError as e:
            raise self.usage("%s, got %s" % (message, e.shown)) from None


RACK_MAX = 2 ** 32 - 1   # vcregist.rack INT UNSIGNED


# ------------------------------------------------------------------------ logging
def setup_logging(cfg, quiet=False, verbose=False):
    """Log to ``[site] log_file``; without one, to syslog when ``quiet`` (cron mails whatever
    reaches stdout/stderr), else warnings to stderr."""
    root = logging.getLogger()
    if root.handlers:
        return
    if not cfg.site.log_file and quiet and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        h = SysLogHandler(address="/dev/log")
        h.setFormatter(logging.Formatter("vc[%(process)d]: %(name)s %(levelname)s %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
        return
    if cfg.site.log_file:
        try:
            h = logging.FileHandler(cfg.site.log_file)
        except OSError as e:
            raise VcError("cannot open log file %s: %s" % (cfg.site.log_file, e)) from None
        h.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                         "%(message)s"))
        root.addHandler(h)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.WARNING)


def _log_is_not_stderr() -> bool:
    """Logging is set up and writes somewhere other than stderr (a file, syslog)."""
    handlers = logging.getLogger().handlers
    return bool(handlers) and not any(
        type(h) is logging.StreamHandler and getattr(h, "stream", None) is sys.stderr
        for h in handlers)


# ------------------------------------------------------------------------ running
def dispatch(parser_builder, commands: Mapping[str, Command], argv: Sequence[str],
             context: Optional[Callable[..., Context]] = None, out=None, **ctx_kw) -> int:
    """Parse ``argv`` and run the chosen command. Raises what the handler raises.

    :param context: ``context(prog, args, out, **ctx_kw) -> Context`` (default
        :class:`Context`): a program may prepare more before any handler runs.
    """
    return _dispatch(parser_builder(commands), argv, context, out, **ctx_kw)


def _dispatch(parser, argv, context, out, **ctx_kw) -> int:
    args = parser.parse_args(list(argv))
    ctx = (context or Context)(parser.prog, args, out, **ctx_kw)
    rc = args.command.run(ctx, args)
    return 0 if rc is None else rc


def runcli(parser_builder, commands: Mapping[str, Command], argv: Optional[Sequence[str]] = None,
           *, context: Optional[Callable[..., Context]] = None, log_errors: bool = False,
           out=None, **ctx_kw) -> int:
    """Run one command line; returns the exit code and raises nothing a user could cause.

    A :class:`~vc.errors.VcError` becomes one line on stderr (``PROG: message``; the prefix
    once) and its ``exit_code``; Ctrl-C 130; a closed pipe (``| head``) 0; anything else is a
    bug: its traceback goes to the log, the user gets one line and exit code 1.

    :param log_errors: also log a ``VcError`` (the tick: cron mails stderr, the log keeps it),
        when the log is not stderr itself.
    :param ctx_kw: for the :class:`Context` (tests: ``cfg``, ``now``, ``uid``, ``environ``).
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = parser_builder(commands)
    prog = parser.prog
    try:
        return _dispatch(parser, argv, context, out, **ctx_kw)
    except VcError as e:
        msg = str(e)
        if log_errors and _log_is_not_stderr():
            LOG.error("%s", msg)
        # usage errors already name the program (and the subcommand): the prefix once
        sys.stderr.write("%s\n" % msg if msg.startswith(prog) else "%s: %s\n" % (prog, msg))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % prog)
        return 130
    except BrokenPipeError:  # | head: the reader is gone; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # a bug: keep the traceback in the log, give the user one line
        LOG.exception("%s: unexpected error", prog)
        sys.stderr.write("%s: internal error (see the log; this is a bug)\n" % prog)
        return 1


__all__ = ["Command", "Context", "Parser", "actor_name", "add_arguments", "add_commands", "arg",
           "dispatch", "emit_json", "identity", "runcli", "setup_logging", "single_parser",
           "subcommand_parser"]
