"""What a cluster is now, read without changing anything: ``vc_ctl.py status|list|dump`` and
``start --dry-run`` (the steps' own policy, :mod:`vc.steps` and :mod:`vc.designer`)."""

from typing import List, Optional

from vc import addresses, designer, reservations, steps
from vc.errors import VcError


def status(ctl, rack: Optional[int] = None) -> List[dict]:
    """Per node: name, appliance, MAC, IP, host and the libvirt state now."""
    if rack is not None:
        reservations.get(ctl.db, rack)  # NotFound for an unknown rack
    rows = ctl.db.query(
        "SELECT n.rack, n.name, n.appliance, n.`rank`, n.mac, n.ip, n.public_ip, n.host, "
        "n.state AS recorded, r.state AS cluster FROM vcnode n JOIN vcregist r ON r.rack = "
        "n.rack" + (" WHERE n.rack = %s" if rack is not None else "") +
        " ORDER BY n.rack, n.appliance = 'compute', n.`rank`",
        (rack,) if rack is not None else ())
    for r in rows:
        try:
            r["libvirt"] = ctl.host(r["host"]).state(designer.domain_name(ctl.cfg, r["name"]))
        except VcError as e:
            r["libvirt"] = "unknown (%s)" % e
    return rows


def plan_preview(ctl, rack):
    """The plan and domain XML a start would use, changing nothing (``--dry-run``)."""
    reservations.get(ctl.db, rack)
    plan = ctl.db.transaction(lambda cur: addresses.preview(
        ctl.cfg, cur, rack, reservations._resources(cur, rack)))
    vols = [v for v in steps.volumes(ctl.db, rack) if v["iqn"]]
    return plan, [steps.node_spec(ctl, plan, n, vols).to_xml() for n in plan.nodes]


def dump_text(ctl, plan) -> str:
    """The ``insert-ethers`` dump of a plan."""
    return steps.dump_text(ctl, plan)


def dump(ctl, rack) -> str:
    """The dump of a started cluster."""
    plan = ctl.db.transaction(lambda cur: addresses.load(cur, rack))
    if plan is None:
        reservations.get(ctl.db, rack)
        raise VcError("rack %d has no addresses (not started)" % rack)
    return dump_text(ctl, plan)
