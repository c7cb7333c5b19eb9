"""``vc_ctl.py``: the operator's command line. Parsing, output and exit codes only; the work is
done by the library modules.

Exit codes: 0 success, 1 refused or failed (one line on stderr), 2 usage or configuration error.
"""

import argparse
import getpass
import json
import logging
import os
import sys
from datetime import datetime

from vc import config as vconfig
from vc import reservations, timeutil
from vc.errors import UsageError, VcError

LOG = logging.getLogger("vc")
PROG = "vc_ctl.py"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message):
        raise UsageError("%s: %s (see '%s --help')" % (self.prog, message, self.prog))


def _json_default(o):
    if isinstance(o, datetime):
        return timeutil.iso(o)
    raise TypeError(type(o).__name__)


def emit_json(obj, out):
    out.write(json.dumps(obj, default=_json_default, indent=2, sort_keys=True) + "\n")


def actor_name():
    """Who is acting: the sudo caller if any, else the login name."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def is_admin(cfg, who):
    return os.geteuid() == 0 or who in cfg.admins


def build_parser():
    p = Parser(prog=PROG, description="Reserve, inspect and control virtual clusters.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def cmd(name, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = cmd("reserve", "book a virtual cluster for a time window")
    sp.add_argument("--start", required=True, help="ISO 8601 (naive = site time zone) or now+2h")
    sp.add_argument("--end", required=True, help="ISO 8601 (naive = site time zone) or now+2h")
    sp.add_argument("--gateways", default="1", help="gateway (virtual frontend) nodes, >= 1")
    sp.add_argument("--computes", default="0", help="compute nodes, >= 0")
    for what, unit in (("memory", "MB"), ("disk", "GB"), ("vcpus", "")):
        key = {"memory": "memory_mb", "disk": "disk_gb", "vcpus": "vcpus"}[what]
        sp.add_argument("--" + what, dest=key, help="per node, both appliances %s" % unit)
        sp.add_argument("--gateway-" + what, dest="gateway_" + key, help="per gateway node")
        sp.add_argument("--compute-" + what, dest="compute_" + key, help="per compute node")
    sp.add_argument("--iscsi", dest="volumes", action="append", default=[],
                    metavar="MOUNT:TARGET:SIZE_GB", help="an iSCSI volume (repeatable)")
    sp.add_argument("--owner", help="owner (default: you; admins only)")
    sp.add_argument("--comment", default="")

    cmd("list", "list reservations").add_argument("--owner", help="only this owner's")
    cmd("show", "one reservation with its nodes and events").add_argument("rack")
    sp = cmd("extend", "change the end of a reservation")
    sp.add_argument("rack")
    sp.add_argument("--end", required=True)
    sp = cmd("delete", "delete a reservation (a running one is stopped first)")
    sp.add_argument("rack")
    sp.add_argument("--delete-volumes", action="store_true",
                    help="confirm that its iSCSI volumes and their data are destroyed too")
    sp = cmd("start", "start a reservation's cluster now, or finish a start (root)")
    sp.add_argument("rack")
    sp.add_argument("--dry-run", action="store_true", help="print the plan and domain XML only")
    sp = cmd("stop", "end a reservation now and remove its cluster, or finish a stop (root)")
    sp.add_argument("rack")
    sp.add_argument("--dry-run", action="store_true", help="print what would be removed only")
    cmd("status", "nodes with MAC, IP, host and libvirt state").add_argument("rack", nargs="?")
    cmd("dump", "the cluster's insert-ethers dump").add_argument("rack")
    sp = cmd("db", "database schema")
    sp.add_argument("action", choices=["upgrade", "version"])
    sp = cmd("target", "iSCSI targets: add, list, trust (pin the host key), remove, key")
    tsub = sp.add_subparsers(dest="taction", metavar="ACTION", parser_class=Parser)
    tsub.required = True
    t = tsub.add_parser("add", help="register a target")
    t.add_argument("name")
    t.add_argument("--address", required=True)
    t.add_argument("--port", default="22", help="SSH port")
    t.add_argument("--user", dest="ssh_user", default="root", help="SSH user")
    t.add_argument("--iscsi-port", default="3260")
    tsub.add_parser("list", help="registered targets")
    t = tsub.add_parser("trust", help="show the target's SSH host key and pin it")
    t.add_argument("name")
    t.add_argument("--fingerprint", help="pin only if the key shown matches this")
    t.add_argument("--yes", action="store_true", help="pin what is shown without asking")
    t = tsub.add_parser("remove", help="remove a target no reservation uses")
    t.add_argument("name")
    tsub.add_parser("key", help="the frontend's SSH public key (for the targets' "
                                "authorized_keys)")
    for t in tsub.choices.values():
        t.add_argument("--json", action="store_true", help="machine-readable output")
    sp = cmd("cron", "install or remove /etc/cron.d/vc (the once-a-minute tick)")
    sp.add_argument("action", choices=["install", "uninstall", "show"])
    sp.add_argument("--file", default=CRON_FILE, help="cron file (default %(default)s)")
    return p


CRON_FILE = "/etc/cron.d/vc"


def cron_line():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = ("VC_CONFIG=%s " % os.environ["VC_CONFIG"]) if os.environ.get("VC_CONFIG") else ""
    return "* * * * * root %s%s\n" % (env, os.path.join(here, "sbin", "vc_cron.py"))


def cron_cmd(args, out):
    if args.action == "show":
        out.write(cron_line())
        return 0
    if os.geteuid() != 0:
        raise VcError("cron %s: only root may change %s" % (args.action, args.file))
    if args.action == "install":
        tmp = args.file + ".tmp"
        with open(tmp, "w") as f:
            f.write("# VC: start and stop reserved virtual clusters on time (vc_ctl.py cron)\n")
            f.write(cron_line())
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.file)
        out.write("installed %s: %s" % (args.file, cron_line()))
    else:
        try:
            os.unlink(args.file)
            out.write("removed %s\n" % args.file)
        except FileNotFoundError:
            out.write("%s was not installed\n" % args.file)
    return 0


def rack_arg(s):
    try:
        v = int(s)
    except ValueError:
        raise UsageError("%s: RACK must be a positive integer, got %r" % (PROG, s)) from None
    if v < 1 or v > 2 ** 31:
        raise UsageError("%s: RACK must be a positive integer, got %r" % (PROG, s))
    return v


def format_res(r):
    res = r["resources"]
    g, c = res.get("gateway"), res.get("compute")
    parts = []
    for name, x in (("gw", g), ("cmp", c)):
        if x and x["count"]:
            parts.append("%d %s×%dMB/%dGB/%dcpu" % (x["count"], name, x["memory_mb"], x["disk_gb"],
                                                    x["vcpus"]))
    return " + ".join(parts)


def print_list(rows, cfg, out):
    tz = cfg.tzinfo()
    out.write("%5s  %-12s %-9s %-22s %-22s %s\n" % ("RACK", "OWNER", "STATE", "START", "END",
                                                    "NODES"))
    for r in rows:
        state = r["state"] + ("*" if r["pending"] else "")
        out.write("%5d  %-12s %-9s %-22s %-22s %s\n" % (
            r["rack"], r["owner"][:12], state, timeutil.show(r["start"], tz),
            timeutil.show(r["end"], tz), format_res(r)))


def print_show(r, cfg, out):
    tz = cfg.tzinfo()
    pending = "  (pending: %s)" % r["pending"] if r["pending"] else ""
    out.write("rack %d  owner %s  state %s%s\n" % (r["rack"], r["owner"], r["state"], pending))
    out.write("window  %s -> %s\n" % (timeutil.show(r["start"], tz), timeutil.show(r["end"], tz)))
    if r["error"]:
        out.write("error   %s\n" % r["error"])
    out.write("nodes   %s\n" % format_res(r))
    for v in r.get("volumes", []):
        out.write("volume  %s  %d GB on %s (%s)\n" % (v["mount_point"], v["size_gb"], v["target"],
                                                     v["state"]))
    for n in r.get("nodes", []):
        out.write("node    %-16s %-8s %s %-15s %-15s %-10s %s\n" % (
            n["name"], n["appliance"], n["mac"], n["ip"], n["public_ip"] or "-", n["host"] or "-",
            n["state"]))
    for e in r.get("events", []):
        tr = "%s -> %s" % (e["from_state"] or "", e["to_state"] or "") if \
            e["from_state"] != e["to_state"] else ""
        out.write("event   %s  %-8s %-22s %s\n" % (timeutil.show(e["at"], tz), e["actor"], tr,
                                                   e["reason"]))


def print_status(rows, out):
    out.write("%5s  %-18s %-8s %-17s %-15s %-15s %-10s %s\n" % (
        "RACK", "NODE", "APPL", "MAC", "IP", "PUBLIC", "HOST", "LIBVIRT"))
    for r in rows:
        out.write("%5d  %-18s %-8s %-17s %-15s %-15s %-10s %s\n" % (
            r["rack"], r["name"], r["appliance"], r["mac"], r["ip"], r["public_ip"] or "-",
            r["host"] or "-", r["libvirt"]))


def run(argv, now=None, out=None, cfg=None):
    """Run one command. Returns the exit code; raises nothing a user could cause."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    cfg = cfg or vconfig.load()
    setup_logging(cfg)
    from vc.db import Database

    db = Database(cfg)
    now = now or timeutil.utcnow()
    who = actor_name()
    admin = is_admin(cfg, who)

    if args.cmd == "db":
        if args.action == "upgrade":
            applied = db.upgrade(now)
            if args.json:
                emit_json({"applied": applied, "version": db.schema_version()}, out)
            else:
                out.write("schema at version %d%s\n" % (db.schema_version(), (
                    " (applied: %s)" % ", ".join(applied)) if applied else " (nothing to do)"))
        else:
            v = db.schema_version()
            emit_json({"version": v}, out) if args.json else out.write("%d\n" % v)
        return 0

    if args.cmd == "cron":
        return cron_cmd(args, out)
    db.check_schema()
    if args.cmd == "target":
        return target_cmd(cfg, db, args, now, admin, out)
    if args.cmd == "reserve":
        fields = {k: v for k, v in vars(args).items() if v is not None}
        owner = args.owner or who
        if owner != who and not admin:
            raise VcError("only an admin may reserve for another owner")
        fields["owner"] = owner
        rack = reservations.create(cfg, db, fields, now, actor=who)
        r = reservations.get(db, rack)
        if args.json:
            emit_json(r, out)
        else:
            out.write("reserved rack %d: %s -> %s, %s\n" % (
                rack, timeutil.show(r["start"], cfg.tzinfo()), timeutil.show(r["end"],
                                                                             cfg.tzinfo()),
                format_res(r)))
        return 0
    if args.cmd == "list":
        rows = reservations.list_all(db, owner=args.owner)
        emit_json(rows, out) if args.json else print_list(rows, cfg, out)
        return 0

    if args.cmd == "status" and args.rack is None:
        rows = make_ctl(cfg, db, who).status()
        emit_json(rows, out) if args.json else print_status(rows, out)
        return 0
    rack = rack_arg(args.rack)
    if args.cmd == "status":
        rows = make_ctl(cfg, db, who).status(rack)
        emit_json(rows, out) if args.json else print_status(rows, out)
    elif args.cmd == "show":
        r = reservations.get(db, rack)
        emit_json(r, out) if args.json else print_show(r, cfg, out)
    elif args.cmd == "extend":
        end = reservations.extend(cfg, db, rack, args.end, now, who, admin)
        result = {"rack": rack, "end": end}
        emit_json(result, out) if args.json else out.write(
            "rack %d now ends %s\n" % (rack, timeutil.show(end, cfg.tzinfo())))
    elif args.cmd == "delete":
        st = reservations.delete(cfg, db, rack, now, who, admin,
                                 confirm_volumes=args.delete_volumes)
        if st == "stopped" and os.geteuid() == 0:
            # volumes to remove and nothing running: root does it now instead of the tick
            st = make_ctl(cfg, db, who).delete(rack, confirm_volumes=True)["state"]
        if args.json:
            emit_json({"rack": rack, "state": st}, out)
        elif st == "deleted":
            out.write("rack %d deleted\n" % rack)
        else:
            out.write("rack %d is %s: it will be stopped, then deleted\n" % (rack, st))
    elif args.cmd in ("start", "stop"):
        if os.geteuid() != 0:
            raise VcError("%s: only root may start or stop clusters" % args.cmd)
        ctl = make_ctl(cfg, db, who)
        if args.dry_run:
            return dry_run(ctl, args.cmd, rack, args.json, out)
        result = ctl.start(rack) if args.cmd == "start" else ctl.stop(rack, "stop by " + who)
        if args.json:
            emit_json(result, out)
        elif not result.get("changed"):
            out.write("rack %d is already %s\n" % (rack, result["state"]))
        else:
            out.write("rack %d %s\n" % (rack, result["state"]))
    elif args.cmd == "dump":
        text = make_ctl(cfg, db, who).dump(rack)
        emit_json({"rack": rack, "dump": text}, out) if args.json else out.write(text)
    return 0


def target_cmd(cfg, db, args, now, admin, out):
    from vc import targets

    a = args.taction
    if a == "list":
        rows = targets.list_all(db)
        if args.json:
            emit_json(rows, out)
            return 0
        out.write("%-16s %-24s %5s %-8s %5s %-6s %s\n" % ("NAME", "ADDRESS", "SSH", "USER",
                                                          "ISCSI", "VOLS", "HOST KEY"))
        for t in rows:
            out.write("%-16s %-24s %5d %-8s %5d %-6d %s\n" % (
                t["name"], t["address"], t["port"], t["ssh_user"], t["iscsi_port"], t["volumes"],
                t["host_key_fingerprint"] or "(not trusted)"))
        return 0
    if a == "key":
        from vc import storage

        if os.geteuid() != 0:
            raise VcError("target key: only root may create or read the frontend's key")
        _, pub = storage.frontend_key(cfg.state_dir)
        emit_json({"public_key": pub}, out) if args.json else out.write(pub + "\n")
        return 0
    if not admin:
        raise VcError("target %s: only an admin may change iSCSI targets" % a)
    if a == "add":
        tid = targets.add(db, {"name": args.name, "address": args.address, "port": args.port,
                               "ssh_user": args.ssh_user, "iscsi_port": args.iscsi_port}, now)
        if args.json:
            emit_json({"id": tid, "name": args.name}, out)
        else:
            out.write("target %s added; check and pin its host key: vc_ctl.py target trust %s\n"
                      % (args.name, args.name))
        return 0
    if a == "remove":
        targets.remove(db, args.name)
        emit_json({"removed": args.name}, out) if args.json else out.write(
            "target %s removed\n" % args.name)
        return 0
    # trust: show the key the target presents now; pin it only on confirmation
    from vc import storage

    want = None
    if args.fingerprint is not None:
        try:
            want = storage.check_fingerprint(args.fingerprint)
        except ValueError as e:
            raise UsageError("%s: --fingerprint: %s" % (PROG, e)) from None
    t = targets.get(db, args.name)
    ktype, fp = storage.probe_host_key(t["address"], t["port"], cfg.ssh_connect_timeout,
                                       name=t["name"])
    if want is not None:
        if want != fp:
            raise VcError("target %s presents %s %s, not %s: not pinned" % (
                t["name"], ktype, fp, want))
    elif not args.yes:
        if not sys.stdin.isatty():
            raise VcError("target %s presents %s %s: compare it with the target's own "
                          "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub there), then run again "
                          "with --fingerprint %s" % (t["name"], ktype, fp, fp))
        sys.stderr.write("target %s (%s:%d) presents %s %s\nPin this key? [y/N] " % (
            t["name"], t["address"], t["port"], ktype, fp))
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise VcError("target %s: not pinned" % t["name"])
    targets.pin(db, t["name"], fp)
    if args.json:
        emit_json({"name": t["name"], "key_type": ktype, "fingerprint": fp}, out)
    else:
        out.write("target %s: pinned %s %s\n" % (t["name"], ktype, fp))
    return 0


def make_ctl(cfg, db, who):
    from vc.ctl import Ctl

    tty = sys.stderr.isatty()

    def progress(msg):
        LOG.info("%s", msg)
        if tty:
            sys.stderr.write(msg + "\n")

    return Ctl(cfg, db, progress=progress, actor=who)


def dry_run(ctl, cmd, rack, as_json, out):
    if cmd == "start":
        plan, xmls = ctl.plan_preview(rack)
        if as_json:
            emit_json({"rack": rack, "subnet": str(plan.subnet), "isolation_id":
                       plan.isolation_id, "nodes": [vars(n) for n in plan.nodes],
                       "domain_xml": xmls, "dump": ctl.dump_text(plan)}, out)
            return 0
        out.write("would start rack %d: subnet %s, isolation id %d\n" % (
            rack, plan.subnet, plan.isolation_id))
        for n in plan.nodes:
            out.write("  %-18s %-8s %s %-15s public %-15s host %s\n" % (
                n.name, n.appliance, n.mac, n.ip, n.public_ip or "-", n.host))
        out.write(ctl.dump_text(plan))
        for x in xmls:
            out.write(x + "\n")
        return 0
    rows = ctl.status(rack)
    if as_json:
        emit_json({"rack": rack, "would_remove": rows}, out)
    else:
        out.write("would stop rack %d and remove %d nodes, their disks, DHCP entries, network "
                  "and addresses\n" % (rack, len(rows)))
        for r in rows:
            out.write("  %-18s %s %-15s on %s (%s)\n" % (r["name"], r["mac"], r["ip"], r["host"],
                                                        r["libvirt"]))
    return 0


def setup_logging(cfg, quiet=False, verbose=False):
    """Log to ``[site] log_file``; without one, to syslog when ``quiet`` (cron mails whatever
    reaches stdout/stderr), else warnings to stderr."""
    root = logging.getLogger()
    if root.handlers:
        return
    if not cfg.log_file and quiet and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        h = SysLogHandler(address="/dev/log")
        h.setFormatter(logging.Formatter("vc[%(process)d]: %(name)s %(levelname)s %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
        return
    if cfg.log_file:
        try:
            h = logging.FileHandler(cfg.log_file)
        except OSError as e:
            raise VcError("cannot open log file %s: %s" % (cfg.log_file, e)) from None
        h.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                         "%(message)s"))
        root.addHandler(h)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.WARNING)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except VcError as e:
        sys.stderr.write("%s: %s\n" % (PROG, e) if not str(e).startswith(PROG) else "%s\n" % e)
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % PROG)
        return 130
    except BrokenPipeError:  # | head: the reader is gone; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # a bug: keep the traceback in the log, give the user one line
        LOG.exception("unexpected error")
        sys.stderr.write("%s: internal error (see the log; this is a bug)\n" % PROG)
        return 1


# ---------------------------------------------------------------------------- vc_cron.py
def cron_parser():
    p = Parser(prog="vc_cron.py", description="One tick: start and stop clusters on time. "
               "Run every minute from cron; logs to [site] log_file (or syslog), not stdout.")
    p.add_argument("--now", help="act as if it were this time (ISO 8601); no look-ahead")
    p.add_argument("--dry-run", action="store_true", help="print what it would do, change nothing")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def cron_run(argv, out=None):
    out = out or sys.stdout
    args = cron_parser().parse_args(argv)
    cfg = vconfig.load()
    setup_logging(cfg, quiet=True, verbose=args.verbose)
    from vc.db import Database
    from vc.scheduler import Scheduler

    db = Database(cfg)
    db.check_schema()
    clock = timeutil.utcnow
    if args.now:
        try:
            fixed = timeutil.parse(args.now, cfg.tzinfo(), timeutil.utcnow())
        except ValueError as e:
            raise UsageError("vc_cron.py: --now: %s" % e) from None
        clock = lambda: fixed  # noqa: E731
    from vc.ctl import Ctl

    ctl = Ctl(cfg, db, clock=clock, actor="vc_cron")
    sched = Scheduler(cfg, db, ctl, clock=clock, lookahead=not args.now,
                      max_start_retries=cfg.max_start_retries,
                      ha_max_restarts=cfg.ha_max_restarts, dry_run=args.dry_run)
    report = sched.tick()
    if args.dry_run:
        for a in report.actions:
            out.write("rack %d: would %s (%s)\n" % (a.rack, a.verb, a.why))
        if not report.actions:
            out.write("nothing to do\n")
    return 0 if all(a.ok for a in report.actions) else 1


def cron_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return cron_run(argv)
    except VcError as e:
        LOG.error("%s", e)
        sys.stderr.write("vc_cron.py: %s\n" % e)
        return e.exit_code
    except Exception:
        LOG.exception("unexpected error in the tick")
        sys.stderr.write("vc_cron.py: internal error (see the log; this is a bug)\n")
        return 1


# ---------------------------------------------------------------------------- vc_vlan.py
def vlan_main(argv=None):
    """``vc_vlan.py add|del RACK``: put a started cluster's nodes on its isolated segment on
    every host it uses, or remove exactly that (start and stop call the same code)."""
    argv = sys.argv[1:] if argv is None else argv
    p = Parser(prog="vc_vlan.py", description=vlan_main.__doc__.split("\n")[0])
    p.add_argument("action", choices=["add", "del"])
    p.add_argument("rack")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--json", action="store_true")
    try:
        args = p.parse_args(argv)
        rack = rack_arg(args.rack)
        if os.geteuid() != 0:
            raise VcError("only root may change the hosts' networks")
        cfg = vconfig.load()
        setup_logging(cfg)
        from vc.db import Database

        db = Database(cfg)
        db.check_schema()
        done = make_ctl(cfg, db, actor_name()).vlan(rack, args.action, args.dry_run)
        if args.json:
            emit_json({"rack": rack, "action": args.action, "isolation": cfg.isolation,
                       "commands": done, "dry_run": args.dry_run}, sys.stdout)
        else:
            for line in done:
                sys.stdout.write(line + "\n")
            sys.stdout.write("rack %d: %s %s (%s, %d command(s)%s)\n" % (
                rack, args.action, "done" if not args.dry_run else "planned", cfg.isolation,
                len(done), ", dry run" if args.dry_run else ""))
        return 0
    except VcError as e:
        sys.stderr.write("vc_vlan.py: %s\n" % e if not str(e).startswith("vc_vlan.py") else
                         "%s\n" % e)
        return e.exit_code
    except Exception:
        LOG.exception("unexpected error")
        sys.stderr.write("vc_vlan.py: internal error (see the log; this is a bug)\n")
        return 1
