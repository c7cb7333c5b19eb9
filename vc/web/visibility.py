"""Who sees what of a reservation, on the pages and in their JSON twins alike.

- **admins** (and everyone in single-user mode): everything, as stored;
- **the owner**: what they need to use the cluster: nodes with MAC, IP and public IP, readiness,
  volumes, the error and the event log, and the login lines, but the frontend's internals
  (paths under the state dir and the other configured directories, physical host names and
  libvirt URIs, iSCSI target addresses, IQNs) are replaced by words;
- **anyone else**: that the rack exists, whose it is, when, its size, state and readiness:
  node names, appliances, states and readiness, volume mount points and sizes; no addresses,
  no error text, no event reasons, no action buttons.

The reservation dicts are changed here, before the template or the JSON encoder sees them, so
what is hidden is not in the answer at all.
"""

import os
import re
from typing import Callable, Dict, List

OTHERS_NODE_KEYS = ("name", "appliance", "rank", "state", "readiness")
OWNER_HIDDEN_NODE_KEYS = ("host",)
OTHERS_VOLUME_KEYS = ("mount_point", "size_gb", "state")
OWNER_HIDDEN_VOLUME_KEYS = ("iqn", "lun")

IQN_RE = re.compile(r"\biqn\.\d{4}-\d{2}\.[^\s,;'\"()<>]+")
URI_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s,;'\"()<>]*")


def level(req, owner: str) -> str:
    """``admin``, ``owner`` or ``other``."""
    if req.admin or req.single_user:
        return "admin"
    return "owner" if owner == req.user else "other"


def _dirs(cfg) -> List[str]:
    """The directories whose paths are the frontend's business (longest first)."""
    out = {cfg.site.state_dir}
    for d in (cfg.virt.disk_dir, cfg.virt.console_dir, cfg.storage.backing_dir,
              cfg.register.hosts_file, cfg.site.log_file, cfg.virt.gateway_image,
              cfg.virt.compute_image, cfg.virt.kernel, cfg.virt.initrd):
        if d:
            out.add(d if d.endswith("/") or "." not in os.path.basename(d)
                    else os.path.dirname(d))
    return sorted((d.rstrip("/") for d in out if d and d != "/"), key=len, reverse=True)


def redactor(req) -> Callable[[str], str]:
    """A function that takes the frontend's internals out of a text (an event reason, an
    error) for an owner who is not an admin: paths under the configured directories become
    ``…/<file name>``, IQNs ``an iSCSI volume``, libvirt URIs, physical host names and
    addresses and iSCSI target addresses ``a host``."""
    cfg = req.cfg
    dirs = _dirs(cfg)
    path_re = re.compile("(?:%s)(?=/|[\\s,;'\"()<>]|$)(?:/[^\\s,;'\"()<>]*)?"
                         % "|".join(re.escape(d) for d in dirs))
    hosts = set()
    for h in cfg.hosts:
        hosts.update(x for x in (h.name, h.underlay_ip, h.initiator) if x)
    try:
        for t in req.db.query("SELECT address FROM vciscsitarget"):
            hosts.add(t["address"])
    except Exception:  # the text is shown without the targets' addresses taken out
        pass
    names = sorted((h for h in hosts if h), key=len, reverse=True)
    host_re = re.compile(r"(?<![\w.-])(?:%s)(?::\d+)?(?![\w-]|\.\w)" % "|".join(
        re.escape(h) for h in names)) if names else None

    def path(m):
        base = os.path.basename(m.group(0).rstrip("/"))
        return "…/" + base if base else "…"

    def run(text):
        if not text:
            return text
        text = IQN_RE.sub("an iSCSI volume", text)
        text = URI_RE.sub("a host", text)
        text = path_re.sub(path, text)
        if host_re is not None:
            text = host_re.sub("a host", text)
        return text

    return run


def _node(n: dict, lvl: str) -> dict:
    if lvl == "other":
        return {k: n[k] for k in OTHERS_NODE_KEYS if k in n}
    if lvl == "owner":
        return {k: v for k, v in n.items() if k not in OWNER_HIDDEN_NODE_KEYS}
    return n


def _volume(v: dict, lvl: str) -> dict:
    if lvl == "other":
        return {k: v[k] for k in OTHERS_VOLUME_KEYS if k in v}
    if lvl == "owner":
        return {k: x for k, x in v.items() if k not in OWNER_HIDDEN_VOLUME_KEYS}
    return v


def apply(req, r: dict, redact: Callable[[str], str] = None) -> str:
    """Trim the reservation ``r`` (a list row or :func:`vc.reservations.get`'s dict) in place
    to what this user may see; returns the level. ``redact``: a :func:`redactor` (made here
    when needed and not given)."""
    lvl = level(req, r["owner"])
    r["visibility"] = lvl
    if lvl == "admin":
        return lvl
    r["nodes"] = [_node(n, lvl) for n in r.get("nodes", [])]
    if "volumes" in r:
        r["volumes"] = [_volume(v, lvl) for v in r["volumes"]]
    if lvl == "other":
        r["error"] = None
        if "events" in r:
            # when and who changed the state; not why (the reasons are the owner's and admins')
            r["events"] = [{"at": e["at"], "actor": e["actor"], "from_state": e["from_state"],
                            "to_state": e["to_state"], "reason": None} for e in r["events"]
                           if e["from_state"] != e["to_state"]]
        return lvl
    redact = redact or redactor(req)
    r["error"] = redact(r.get("error"))
    if "events" in r:
        r["events"] = [dict(e, reason=redact(e["reason"])) for e in r["events"]]
    return lvl


def readiness(nodes: List[dict]) -> Dict[str, int]:
    """``{readiness: how many nodes}`` (booting/up/late)."""
    out: Dict[str, int] = {}
    for n in nodes:
        k = n.get("readiness") or "booting"
        out[k] = out.get(k, 0) + 1
    return out
