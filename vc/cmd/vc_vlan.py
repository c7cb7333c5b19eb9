"""``vc_vlan.py add|del RACK``: put a started cluster's nodes on its isolated segment on every
host it uses, or remove exactly that (start and stop call the same code)."""

from vc.cmd import Command, arg, runcli, single_parser

PROG = "vc_vlan.py"


def vlan(ctx, args):
    rack = ctx.rack(args.rack)
    ctx.require_root("only root may change the hosts' networks")
    cfg = ctx.cfg
    done = ctx.ctl().vlan(rack, args.action, args.dry_run)

    def text(out):
        for line in done:
            out.write(line + "\n")
        out.write("rack %d: %s %s (%s, %d command(s)%s)\n" % (
            rack, args.action, "done" if not args.dry_run else "planned", cfg.network.isolation,
            len(done), ", dry run" if args.dry_run else ""))

    return ctx.emit({"rack": rack, "action": args.action, "isolation": cfg.network.isolation,
                     "commands": done, "dry_run": args.dry_run}, text)


COMMANDS = {
    "vlan": Command(vlan, __doc__.split("\n")[0], args=[
        arg("action", choices=["add", "del"]), arg("rack"),
        arg("--dry-run", action="store_true", help="print the commands only")]),
}

build_parser = single_parser(PROG, "", "vlan")


def main(argv=None, **ctx_kw) -> int:
    """The program. ``ctx_kw`` (tests): ``cfg``, ``uid``, ``environ``, ``out``."""
    return runcli(build_parser, COMMANDS, argv, **ctx_kw)
