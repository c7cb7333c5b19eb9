"""``vc_cron.py``: one tick, run every minute from cron (start and stop clusters on time).

Logs to ``[site] log_file`` (or syslog), not stdout: cron mails whatever reaches stdout/stderr.
A refusal is one line on stderr (and in the log); exit codes as for ``vc_ctl.py``.
"""

from vc import timeutil
from vc.cmd import Command, arg, runcli, single_parser

PROG = "vc_cron.py"


def tick(ctx, args):
    # it starts and stops clusters on the hosts: root's work (as vc_ctl start/stop)
    ctx.require_root("only root may run the tick (it starts and stops clusters)")
    cfg = ctx.config(quiet=True, verbose=args.verbose)
    db = ctx.db
    clock = timeutil.utcnow
    if args.now:
        try:
            fixed = timeutil.parse(args.now, cfg.tzinfo(), timeutil.utcnow())
        except ValueError as e:
            raise ctx.usage("--now: %s" % e) from None
        clock = lambda: fixed  # noqa: E731
    from vc.scheduler import Scheduler

    def make_ctl():
        from vc.ctl import Ctl

        return Ctl(cfg, db, clock=clock, actor="vc_cron")

    ctl = Lazy(make_ctl)
    sched = Scheduler(cfg, db, ctl, clock=clock, lookahead=not args.now,
                      max_start_retries=cfg.cron.max_start_retries,
                      ha_max_restarts=cfg.cron.ha_max_restarts, dry_run=args.dry_run)
    report = sched.tick()
    if args.dry_run:
        for a in report.actions:
            ctx.out.write("rack %d: would %s (%s)\n" % (a.rack, a.verb, a.why))
        if not report.actions:
            ctx.out.write("nothing to do\n")
    return 0 if all(a.ok for a in report.actions) else 1


class Lazy:
    """An object built on first use: the orchestrator and its backends cost ~120 ms of imports,
    which an idle tick (the usual one) never needs."""

    def __init__(self, make):
        self._make, self._obj = make, None

    def __getattr__(self, name):
        if self._obj is None:
            self._obj = self._make()
        return getattr(self._obj, name)


COMMANDS = {
    "tick": Command(tick, "One tick: start and stop clusters on time. Run every minute from "
                          "cron; logs to [site] log_file (or syslog), not stdout.",
                    json=False, args=[
        arg("--now", help="act as if it were this time (ISO 8601); no look-ahead"),
        arg("--dry-run", action="store_true", help="print what it would do, change nothing"),
        arg("--verbose", action="store_true", help="debug logging")]),
}

build_parser = single_parser(PROG, "", "tick")


def main(argv=None, **ctx_kw) -> int:
    """The program. ``ctx_kw`` (tests): ``cfg``, ``uid``, ``environ``, ``out``."""
    return runcli(build_parser, COMMANDS, argv, log_errors=True, **ctx_kw)
