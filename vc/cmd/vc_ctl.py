"""``vc_ctl.py``: the operator's command line. Parsing, output and exit codes only; the work is
done by the library modules.

Exit codes: 0 success, 1 refused or failed (one line on stderr), 2 usage or configuration error.

The commands are the table :data:`COMMANDS` at the end (name -> handler + its arguments); a new
subcommand is one entry there and one ``handler(ctx, args)`` function (see :mod:`vc.cmd`).
"""

import dataclasses
import os
import sys

from vc import keys, preflight, remote, reservations, sshkeys, timeutil
from vc.cmd import Command, Context, arg, dispatch, runcli, subcommand_parser
from vc.errors import VcError
from vc.numbers import parse_int

PROG = "vc_ctl.py"
CRON_FILE = "/etc/cron.d/vc"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------ formatting
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
    if "actions" in r:
        out.write("next: %s\n" % (", ".join(r["actions"]) or "none"))
    if r.get("nodes"):
        out.write("ready   %s\n" % ("yes" if r.get("ready") else "no"))
    for line in r.get("login", []):
        out.write("login   %s\n" % line)
    if r.get("no_key"):
        out.write("warning %s\n" % r["no_key"])
    pf = r.get("preflight")
    if pf:
        out.write("preflight %s (%s): %s\n" % (
            timeutil.show(pf["checked_at"], tz), pf["trigger"],
            "%d problem(s)" % len(pf["problems"]) if pf["problems"] else "ok"))
        for p in pf["problems"]:
            out.write("problem %s %s: %s\n" % (p["kind"], p["where"], p["detail"]))
    for v in r.get("volumes", []):
        out.write("volume  %s  %d GB on %s (%s)\n" % (v["mount_point"], v["size_gb"], v["target"],
                                                     v["state"]))
    for n in r.get("nodes", []):
        out.write("node    %-16s %-8s %s %-15s %-15s %-10s %-8s %s\n" % (
            n["name"], n["appliance"], n["mac"], n["ip"], n["public_ip"] or "-", n["host"] or "-",
            n["state"], n.get("readiness", "-")))
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


def print_targets(rows, out):
    out.write("%-16s %-24s %5s %-8s %5s %-6s %s\n" % ("NAME", "ADDRESS", "SSH", "USER", "ISCSI",
                                                      "VOLS", "HOST KEY"))
    for t in rows:
        out.write("%-16s %-24s %5d %-8s %5d %-6d %s\n" % (
            t["name"], t["address"], t["port"], t["ssh_user"], t["iscsi_port"], t["volumes"],
            t["host_key_fingerprint"] or "(not trusted)"))


# ------------------------------------------------------------------------ reservations
def reserve(ctx, args):
    fields = {k: v for k, v in vars(args).items()
              if v is not None and k not in ("command", "cmd", "json")}
    owner = args.owner or ctx.who
    if owner != ctx.who and not ctx.admin:
        raise VcError("only an admin may reserve for another owner")
    fields["owner"] = owner
    rack = reservations.create(ctx.cfg, ctx.db, fields, ctx.now, actor=ctx.who)
    r = reservations.get(ctx.db, rack)
    tz = ctx.cfg.tzinfo()
    text = "reserved rack %d: %s -> %s, %s\n" % (
        rack, timeutil.show(r["start"], tz), timeutil.show(r["end"], tz), format_res(r))
    if not keys.list_keys(ctx.db, owner):
        r["warning"] = NO_KEY % owner
        text += "warning: %s\n" % r["warning"]
    # pre-flight at booking (short timeouts): problems are warnings, the booking stands
    problems = _booking_preflight(ctx, rack)
    r["preflight"] = preflight.last(ctx.db, rack)
    for p in problems:
        text += "warning: pre-flight: %s\n" % p
    return ctx.emit(r, text)


def _booking_preflight(ctx, rack):
    try:
        return preflight.check_and_record(ctx.cfg, ctx.db, rack, ctx.now, preflight.BOOKING)
    except Exception as e:  # the booking is made; a failing check is only a warning
        return [preflight.Problem("preflight", "frontend", preflight._one_line(e))]


def list_(ctx, args):
    rows = reservations.list_all(ctx.db, owner=args.owner)
    return ctx.emit(rows, lambda out: print_list(rows, ctx.cfg, out))


def show(ctx, args):
    rack = ctx.rack(args.rack)
    r = reservations.get(ctx.db, rack)
    ctx.require_owner(r["owner"], "reservation %d" % rack)
    r["actions"] = reservations.allowed_actions(r, ctx.now, ctx.who, ctx.cfg.site.admins,
                                                root=ctx.root)
    r["login"] = reservations.login(ctx.cfg, r)
    if not keys.list_keys(ctx.db, r["owner"]):
        r["no_key"] = NO_KEY % r["owner"]
    r["preflight"] = preflight.last(ctx.db, rack)
    return ctx.emit(r, lambda out: print_show(r, ctx.cfg, out))


def preflight_(ctx, args):
    """Run the pre-flight now (nothing is changed but the stored result): exit 1 on problems."""
    rack = ctx.rack(args.rack)
    r = reservations.get(ctx.db, rack)
    ctx.require_owner(r["owner"], "reservation %d" % rack)
    problems = preflight.check_and_record(ctx.cfg, ctx.db, rack, ctx.now, preflight.MANUAL)
    obj = {"rack": rack, "ok": not problems, "checked_at": ctx.now,
           "problems": [dataclasses.asdict(p) for p in problems]}

    def text(out):
        if not problems:
            out.write("rack %d: pre-flight ok\n" % rack)
        for p in problems:
            out.write("rack %d: %s\n" % (rack, p))
    ctx.emit(obj, text)
    return 1 if problems else 0


NO_KEY = ("%s has no SSH key: nobody can log in to this cluster (vc_ctl.py key add FILE, or "
          "My SSH keys on the pages)")


def extend(ctx, args):
    rack = ctx.rack(args.rack)
    tz = ctx.cfg.tzinfo()
    if not args.longest:
        if not args.end:
            raise VcError("extend needs --end T, or --longest [--end T]")
        end = reservations.extend(ctx.cfg, ctx.db, rack, args.end, ctx.now, ctx.who, ctx.admin)
        return ctx.emit({"rack": rack, "end": end, "full": True}, "rack %d now ends %s\n" % (
            rack, timeutil.show(end, tz)))
    got = []
    end = reservations.extend(ctx.cfg, ctx.db, rack, args.end, ctx.now, ctx.who, ctx.admin,
                              longest=True, offer_out=got)
    o = got[0]
    text = "rack %d now ends %s" % (rack, timeutil.show(end, tz))
    if not o.full:
        text += " — %s%s" % ("less than asked (%s): " % timeutil.show(o.asked, tz)
                              if o.asked else "the longest possible: ", o.why(tz))
    return ctx.emit(o.as_dict(tz), text + "\n")


def delete(ctx, args):
    rack = ctx.rack(args.rack)
    st = reservations.delete(ctx.cfg, ctx.db, rack, ctx.now, ctx.who, ctx.admin,
                             confirm_volumes=args.delete_volumes)
    if st == "stopped" and ctx.root:
        # volumes to remove and nothing running: root does it now instead of the tick
        st = ctx.ctl().delete(rack, confirm_volumes=True)["state"]
    if st == "deleted":
        text = "rack %d deleted\n" % rack
    else:
        text = "rack %d is %s: it will be stopped, then deleted\n" % (rack, st)
    return ctx.emit({"rack": rack, "state": st}, text)


def _changed(ctx, rack, result):
    if not result.get("changed"):
        return ctx.emit(result, "rack %d is already %s\n" % (rack, result["state"]))
    return ctx.emit(result, "rack %d %s\n" % (rack, result["state"]))


def _start_or_stop(ctx, args, preview, act):
    rack = ctx.rack(args.rack)
    ctx.require_root("%s: only root may start or stop clusters" % args.cmd)
    ctl = ctx.ctl()
    if args.dry_run:
        return preview(ctx, ctl, rack)
    return _changed(ctx, rack, act(ctl, rack))


def start(ctx, args):
    def act(ctl, rack):
        result = ctl.start(rack)
        if args.wait_ready:
            result["readiness"] = ctl.wait_ready(rack)
            result["ready"] = True
        return result

    return _start_or_stop(ctx, args, start_preview, act)


def stop(ctx, args):
    # a start under way holds the rack: the stop is recorded at once, carried out when the
    # start ends (waiting up to STOP_WAIT s here), else by the next tick
    return _start_or_stop(ctx, args, stop_preview, lambda ctl, rack: ctl.stop(
        rack, "stop by " + ctx.who, wait=STOP_WAIT))


STOP_WAIT = 180


def start_preview(ctx, ctl, rack):
    from vc import readout  # the orchestrator's imports: only where it is used

    plan, xmls = readout.plan_preview(ctl, rack)
    if ctx.json:
        return ctx.emit({"rack": rack, "subnet": str(plan.subnet), "isolation_id":
                         plan.isolation_id, "nodes": [vars(n) for n in plan.nodes],
                         "domain_xml": xmls, "dump": readout.dump_text(ctl, plan)})
    out = ctx.out
    out.write("would start rack %d: subnet %s, isolation id %d\n" % (
        rack, plan.subnet, plan.isolation_id))
    for n in plan.nodes:
        out.write("  %-18s %-8s %s %-15s public %-15s host %s\n" % (
            n.name, n.appliance, n.mac, n.ip, n.public_ip or "-", n.host))
    out.write(readout.dump_text(ctl, plan))
    for x in xmls:
        out.write(x + "\n")
    return 0


def stop_preview(ctx, ctl, rack):
    from vc import readout  # the orchestrator's imports: only where it is used

    rows = readout.status(ctl, rack)

    def text(out):
        out.write("would stop rack %d and remove %d nodes, their disks, DHCP entries, network "
                  "and addresses\n" % (rack, len(rows)))
        for r in rows:
            out.write("  %-18s %s %-15s on %s (%s)\n" % (r["name"], r["mac"], r["ip"], r["host"],
                                                        r["libvirt"]))

    return ctx.emit({"rack": rack, "would_remove": rows}, text)


def status(ctx, args):
    from vc import readout  # the orchestrator's imports: only where it is used

    rack = None if args.rack is None else ctx.rack(args.rack)
    ctx.require_root("status: only root may ask the hosts' libvirt for the nodes' state")
    ctl = ctx.ctl()
    rows = readout.status(ctl, rack)
    return ctx.emit(rows, lambda out: print_status(rows, out))


def dump(ctx, args):
    from vc import readout  # the orchestrator's imports: only where it is used

    rack = ctx.rack(args.rack)
    ctx.require_owner(reservations.get(ctx.db, rack)["owner"], "reservation %d" % rack)
    text = readout.dump(ctx.ctl(), rack)
    return ctx.emit({"rack": rack, "dump": text}, text)


# ------------------------------------------------------------------------ db, cron
def db(ctx, args):
    if args.action == "upgrade":
        ctx.require_root("db upgrade: only root may change the database schema")
    d = ctx.database(schema=False)
    if args.action == "upgrade":
        applied = d.upgrade(ctx.now)
        v = d.schema_version()
        return ctx.emit({"applied": applied, "version": v}, "schema at version %d%s\n" % (
            v, (" (applied: %s)" % ", ".join(applied)) if applied else " (nothing to do)"))
    v = d.schema_version()
    return ctx.emit({"version": v}, "%d\n" % v)


def cron_line():
    env = ("VC_CONFIG=%s " % os.environ["VC_CONFIG"]) if os.environ.get("VC_CONFIG") else ""
    return "* * * * * root %s%s\n" % (env, os.path.join(CHECKOUT, "sbin", "vc_cron.py"))


def cron(ctx, args):
    out = ctx.out
    if args.action == "show":
        out.write(cron_line())
        return 0
    ctx.require_root("cron %s: only root may change %s" % (args.action, args.file))
    if args.action == "install":
        tmp = args.file + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write("# VC: start and stop reserved virtual clusters on time (vc_ctl.py "
                        "cron)\n")
                f.write(cron_line())
            os.chmod(tmp, 0o644)
            os.replace(tmp, args.file)
        except OSError as e:
            if os.path.isfile(tmp):
                os.unlink(tmp)
            raise VcError("cron install: cannot write %s: %s" % (args.file, e.strerror)) from None
        out.write("installed %s: %s" % (args.file, cron_line()))
    else:
        try:
            os.unlink(args.file)
            out.write("removed %s\n" % args.file)
        except FileNotFoundError:
            out.write("%s was not installed\n" % args.file)
        except OSError as e:
            raise VcError("cron uninstall: cannot remove %s: %s" % (args.file, e.strerror)) \
                from None
    return 0


# ------------------------------------------------------------------------ iSCSI targets
def _target_admin(ctx, action):
    if not ctx.admin:
        raise VcError("target %s: only an admin may change iSCSI targets" % action)


def target_list(ctx, args):
    from vc import targets

    ctx.require_admin("target list: only an admin may see the iSCSI targets")
    rows = targets.list_all(ctx.db)
    return ctx.emit(rows, lambda out: print_targets(rows, out))


def target_key(ctx, args):

    ctx.require_root("target key: only root may create or read the frontend's key")
    _, pub = remote.frontend_key(ctx.cfg.site.state_dir)
    return ctx.emit({"public_key": pub}, pub + "\n")


def target_add(ctx, args):
    from vc import targets

    _target_admin(ctx, "add")
    tid = targets.add(ctx.db, {"name": args.name, "address": args.address,
                               "port": _port(args.port, "SSH port"), "ssh_user": args.ssh_user,
                               "iscsi_port": _port(args.iscsi_port, "iSCSI port")}, ctx.now)
    return ctx.emit({"id": tid, "name": args.name},
                    "target %s added; check and pin its host key: %s target trust %s\n"
                    % (args.name, PROG, args.name))


def target_update(ctx, args):
    from vc import targets

    _target_admin(ctx, "update")
    changes = {k: getattr(args, k) for k in ("address", "port", "ssh_user", "iscsi_port")
               if getattr(args, k) is not None}
    for k, what in (("port", "SSH port"), ("iscsi_port", "iSCSI port")):
        if k in changes:
            changes[k] = _port(changes[k], what)
    if not changes:
        raise ctx.usage("target update: give at least one of --address, --port, --user, "
                        "--iscsi-port")
    r = targets.update(ctx.db, args.name, changes)
    text = "target %s updated\n" % args.name
    if r["pin_dropped"]:
        text = ("target %s updated; its pinned host key was dropped (a new address or port): "
                "check and pin it again: %s target trust %s\n" % (args.name, PROG, args.name))
    return ctx.emit(r, text)


def _port(value, what) -> str:
    """A port argument (ASCII digits, 1-65535), as the text vc.targets validates and stores.
    :raises ValidationError: ``SSH port must be a whole number from 1 to 65535, got ...``."""
    return str(parse_int(value, what, 1, 65535))


def target_remove(ctx, args):
    from vc import targets

    _target_admin(ctx, "remove")
    targets.remove(ctx.db, args.name)
    return ctx.emit({"removed": args.name}, "target %s removed\n" % args.name)


def target_trust(ctx, args):
    """Show the key the target presents now; pin it only on confirmation."""
    from vc import targets

    _target_admin(ctx, "trust")
    want = None
    if args.fingerprint is not None:
        try:
            want = targets.check_fingerprint(args.fingerprint)
        except ValueError as e:
            raise ctx.usage("--fingerprint: %s" % e) from None
    t = targets.get(ctx.db, args.name)
    ktype, fp = remote.probe_host_key(t["address"], t["port"],
                                                 ctx.cfg.storage.connect_timeout, name=t["name"])
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
    targets.pin(ctx.db, t["name"], fp)
    return ctx.emit({"name": t["name"], "key_type": ktype, "fingerprint": fp},
                    "target %s: pinned %s %s\n" % (t["name"], ktype, fp))


# ------------------------------------------------------------------------ owner SSH keys
def _owner(ctx, args):
    owner = args.owner or ctx.who
    if owner != ctx.who and not ctx.admin:
        raise VcError("only an admin may manage another owner's keys")
    return owner


def key_add(ctx, args):
    owner = _owner(ctx, args)
    if args.file == "-":
        text = sys.stdin.read(sshkeys.MAX_PASTE + 1)
    else:
        try:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                text = f.read(sshkeys.MAX_PASTE + 1)
        except OSError as e:
            raise VcError("cannot read %s: %s" % (args.file, e.strerror)) from None
    row, changed = keys.add(ctx.db, owner, text, name=args.name, now=ctx.now)
    return ctx.emit(dict(row, changed=changed), "%s key %d for %s: %s %s (%s)\n" % (
        "added" if changed else "already have", row["id"], owner, row["key_type"],
        row["fingerprint"], row["name"]))


def key_list(ctx, args):
    if args.all:
        ctx.require_admin("key list --all: only an admin may list everyone's keys")
    rows = keys.list_keys(ctx.db, None if args.all else _owner(ctx, args))

    def text(out):
        for k in rows:
            out.write("%5d  %-12s %-20s %-28s %s\n" % (k["id"], k["owner"][:12], k["name"][:20],
                                                       k["key_type"], k["fingerprint"]))
    return ctx.emit(rows, text)


def key_remove(ctx, args):
    key_id = ctx.number(args.id, "ID must be a key number (vc_ctl.py key list)", 1, 2 ** 32 - 1)
    keys.remove(ctx.db, key_id, ctx.who, ctx.admin)
    return ctx.emit({"id": key_id, "removed": True}, "key %d removed\n" % key_id)


# ------------------------------------------------------------------------ the command table
def _reserve_args(sp):
    for what, unit in (("memory", "MB"), ("disk", "GB"), ("vcpus", "")):
        key = {"memory": "memory_mb", "disk": "disk_gb", "vcpus": "vcpus"}[what]
        sp.add_argument("--" + what, dest=key, help="per node, both appliances %s" % unit)
        sp.add_argument("--gateway-" + what, dest="gateway_" + key, help="per gateway node")
        sp.add_argument("--compute-" + what, dest="compute_" + key, help="per compute node")
    sp.add_argument("--iscsi", dest="volumes", action="append", default=[],
                    metavar="MOUNT:TARGET:SIZE_GB", help="an iSCSI volume (repeatable)")
    sp.add_argument("--owner", help="owner (default: you; admins only)")
    sp.add_argument("--comment", default="")


RACK = arg("rack")
TIME = "ISO 8601 (naive = site time zone) or now+2h"

TARGET_COMMANDS = {
    "add": Command(target_add, "register a target", args=[
        arg("name"), arg("--address", required=True), arg("--port", default="22", help="SSH port"),
        arg("--user", dest="ssh_user", default="root", help="SSH user"),
        arg("--iscsi-port", default="3260")]),
    "list": Command(target_list, "registered targets"),
    "update": Command(target_update, "change a target's address, ports or SSH user (a new "
                                     "address or SSH port drops its pinned host key)", args=[
        arg("name"), arg("--address"), arg("--port", help="SSH port"),
        arg("--user", dest="ssh_user", help="SSH user"), arg("--iscsi-port")]),
    "trust": Command(target_trust, "show the target's SSH host key and pin it", args=[
        arg("name"), arg("--fingerprint", help="pin only if the key shown matches this"),
        arg("--yes", action="store_true", help="pin what is shown without asking")]),
    "remove": Command(target_remove, "remove a target no reservation uses", args=[arg("name")]),
    "key": Command(target_key, "the frontend's SSH public key (for the targets' "
                               "authorized_keys)"),
}

def host_list(ctx, args):
    from vc import hosts

    ctx.require_admin("host list: only an admin may see the physical hosts")
    rows = hosts.list_hosts(ctx.cfg, ctx.db)

    def text(out):
        out.write("%-12s %-11s %-11s %-9s %-7s %s\n" % ("HOST", "MEMORY MB", "VCPUS",
                                                       "REACHABLE", "DRAINED", "CLUSTERS"))
        for h in rows:
            out.write("%-12s %-11s %-11s %-9s %-7s %s\n" % (
                h["name"], "%s/%s" % (h["used_memory_mb"], h["memory_mb"]),
                "%s/%s" % (h["used_vcpus"], h["vcpus"]), "yes" if h["reachable"] else "NO",
                "yes" if h["drained"] else "no",
                " ".join(str(r) for r in h["clusters"]) or "-"))
    return ctx.emit(rows, text)


def host_drain(ctx, args):
    from vc import hosts

    ctx.require_root("host drain: only root may take a host out of use")
    r = hosts.drain(ctx.cfg, ctx.db, args.name, ctx.now)
    if args.migrate:
        from vc import migrate

        try:
            r["migrate"] = migrate.off_host(ctx.ctl(), args.name)
        except VcError as e:
            raise VcError("host %s drained, nothing migrated: %s (it stays drained: 'host "
                          "enable %s' undoes that)" % (args.name, e, args.name)) from e
    tz = ctx.cfg.tzinfo()

    def text(out):
        out.write("host %s drained: no new nodes go there and admission no longer counts it; "
                  "%d node(s) of cluster(s) %s %s there\n" % (
                      r["host"], r["nodes"], " ".join(map(str, r["clusters"])) or "-",
                      "were" if args.migrate else "keep running"))
        for x in r["no_longer_fit"]:
            out.write("no longer fits: reservation %d (%s, %s to %s): %s\n" % (
                x["rack"], x["owner"], timeutil.show(x["start"], tz),
                timeutil.show(x["end"], tz), x["why"]))
        m = r.get("migrate")
        for x in (m or {}).get("results", []):
            if x["ok"]:
                out.write("migrated: rack %d %s %s -> %s in %.1f s (%s storage)\n" % (
                    x["rack"], x["node"], x["source"], x["target"], x["seconds"], x["storage"]))
            else:
                out.write("NOT migrated: rack %d %s stays on %s (to %s): %s\n" % (
                    x["rack"], x["node"], x["source"], x["target"] or "-", x["error"]))
        for x in (m or {}).get("skipped", []):
            out.write("skipped: rack %d %s: %s\n" % (x["rack"], x["node"], x["why"]))
        for note in (m or {}).get("kept", []):
            out.write("kept: %s\n" % note)
    ctx.emit(r, text)
    if r.get("migrate") and r["migrate"]["failed"]:
        sys.stderr.write("%s: host drain --migrate: %d node(s) not migrated (see above)\n"
                         % (PROG, r["migrate"]["failed"]))
        return 1
    return 0


def host_enable(ctx, args):
    from vc import hosts

    ctx.require_root("host enable: only root may put a host back into use")
    r = hosts.enable(ctx.cfg, ctx.db, args.name, ctx.now)
    return ctx.emit(r, "host %s enabled\n" % args.name)


def host_remove(ctx, args):
    from vc import hosts

    ctx.require_root("host remove: only root may remove a host")
    r = hosts.remove(ctx.cfg, ctx.db, args.name, ctx.now)
    return ctx.emit(r, "host %s %s\n" % (args.name, "removed" if r["removed"] else r["note"]))


HOST_COMMANDS = {
    "list": Command(host_list, "the physical hosts: capacity, used now, reachable, drained, "
                               "clusters"),
    "drain": Command(host_drain, "no new placements on a host; say which reservations no "
                                 "longer fit", args=[
        arg("name"), arg("--migrate", action="store_true",
                         help="then live-migrate its running nodes to other hosts with room")]),
    "enable": Command(host_enable, "put a drained host back into use", args=[arg("name")]),
    "remove": Command(host_remove, "remove a host that runs no node", args=[arg("name")]),
}

KEY_COMMANDS = {
    "add": Command(key_add, "add an SSH public key (FILE, or - for stdin); private keys are "
                            "refused", args=[
        arg("file"), arg("--owner", help="whose key (default: you; admins only)"),
        arg("--name", help="a label (default: the key's comment)")]),
    "list": Command(key_list, "SSH keys", args=[
        arg("--owner", help="whose keys (default: you)"),
        arg("--all", action="store_true", help="everyone's (admins)")]),
    "remove": Command(key_remove, "remove one of your keys", args=[arg("id")]),
}

COMMANDS = {
    "reserve": Command(reserve, "book a virtual cluster for a time window", args=[
        arg("--start", required=True, help=TIME), arg("--end", required=True, help=TIME),
        arg("--gateways", default="1", help="gateway (virtual frontend) nodes, >= 1"),
        arg("--computes", default="0", help="compute nodes, >= 0")], setup=_reserve_args),
    "list": Command(list_, "list reservations", args=[arg("--owner", help="only this owner's")]),
    "show": Command(show, "one reservation with its nodes, events and what you may do next",
                    args=[RACK]),
    "extend": Command(extend, "change the end of a reservation", args=[
        RACK, arg("--end", help=TIME),
        arg("--longest", action="store_true",
            help="the longest extension that fits (up to --end, else up to the limit); says "
                 "when that is less than asked and which reservation blocks the rest")]),
    "delete": Command(delete, "delete a reservation (a running one is stopped first)", args=[
        RACK, arg("--delete-volumes", action="store_true",
                  help="confirm that its iSCSI volumes and their data are destroyed too")]),
    "start": Command(start, "start a reservation's cluster now, or finish a start (root)", args=[
        RACK, arg("--dry-run", action="store_true", help="print the plan and domain XML only"),
        arg("--wait-ready", action="store_true",
            help="then wait until every node answers SSH ([virt] ready_timeout)")]),
    "stop": Command(stop, "end a reservation now and remove its cluster, or finish a stop "
                          "(root)", args=[
        RACK, arg("--dry-run", action="store_true", help="print what would be removed only")]),
    "preflight": Command(preflight_, "check (without acting) the hosts, images, iSCSI targets "
                         "and pools a reservation's start needs; exit 1 on problems",
                         args=[RACK]),
    "status": Command(status, "nodes with MAC, IP, host and libvirt state", args=[
        arg("rack", nargs="?")]),
    "dump": Command(dump, "the cluster's insert-ethers dump", args=[RACK]),
    "db": Command(db, "database schema", schema=False, args=[
        arg("action", choices=["upgrade", "version"])]),
    "target": Command(None, "iSCSI targets: add, list, update, trust (pin the host key), "
                            "remove, key", sub=TARGET_COMMANDS),
    "key": Command(None, "owner SSH keys: add, list, remove (they go into every node's seed)",
                   sub=KEY_COMMANDS),
    "host": Command(None, "physical hosts: list, drain, enable, remove", sub=HOST_COMMANDS),
    "cron": Command(cron, "install or remove /etc/cron.d/vc (the once-a-minute tick)",
                    schema=False, args=[
        arg("action", choices=["install", "uninstall", "show"]),
        arg("--file", default=CRON_FILE, help="cron file (default %(default)s)")]),
}

build_parser = subcommand_parser(PROG, "Reserve, inspect and control virtual clusters.")


def context(prog, args, out=None, **kw) -> Context:
    """As before the table: the configuration is read (and logging set up) before any command,
    and the schema checked unless the command is ``db`` or ``cron``."""
    ctx = Context(prog, args, out, **kw)
    ctx.config()
    ctx.database(schema=args.command.schema)
    return ctx


def run(argv, now=None, out=None, cfg=None, uid=None, environ=None) -> int:
    """Run one command; raises what it raises (tests; :func:`main` is the program)."""
    return dispatch(build_parser, COMMANDS, argv, context=context, out=out, now=now, cfg=cfg,
                    uid=uid, environ=environ)


def main(argv=None, **ctx_kw) -> int:
    """The program. ``ctx_kw`` (tests): ``cfg``, ``now``, ``out``, ``uid``, ``environ``."""
    return runcli(build_parser, COMMANDS, argv, context=context, **ctx_kw)
