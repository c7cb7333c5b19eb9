"""Guest readiness: a node is *up* when its SSH server answers, not when its domain runs.

Each node is ``booting`` from the moment its domain runs (:func:`vc.steps.set_node`), ``up`` once
its SSH port on its private address sends an SSH banner, and ``late`` when that did not happen
within ``[virt] ready_timeout``. A cluster is *ready* when every node is up.

Why the SSH banner and not the DHCP lease: VC's guests get their addresses statically from the
seed (no lease exists), and SSH answering is exactly what the owner needs; the banner (not just
an open port) proves the guest's sshd runs. The probe runs from the frontend, which holds the
``.1`` address of every cluster network it serves.

Several hosts: the segment's ``.1`` is on the DHCP host only (the first gateway's host,
:func:`vc.network.dhcp_host`). When that host is remote the frontend may not reach the segment
at all, so a node the frontend cannot reach is probed once more *from that host*, through its
executor (``bash`` opens ``/dev/tcp/IP/22`` there and reads the banner): one SSH round trip per
node still booting, in parallel, only for clusters whose DHCP host is remote.
"""

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Callable, Dict, List

from vc.db import aware_utc, naive_utc

LOG = logging.getLogger(__name__)

BOOTING, UP, LATE = "booting", "up", "late"


def ssh_answers(ip: str, port: int = 22, timeout: float = 1.0) -> bool:
    """Does an SSH server answer at ``ip:port`` (its banner starts with ``SSH-``)?"""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def ssh_answers_via(execute, ip: str, port: int = 22, timeout: float = 1.0) -> bool:
    """Does an SSH server answer at ``ip:port`` as seen from the host of ``execute``?"""
    try:
        out = execute(["timeout", str(max(1, int(timeout + 0.999))), "bash", "-c",
                       'exec 3<>"/dev/tcp/$1/$2" && head -c 4 <&3', "probe", ip, str(port)])
    except Exception as e:  # noqa: BLE001 - any failure means: not (yet) answering
        LOG.debug("probe of %s via host: %s", ip, e)
        return False
    return out.startswith("SSH-")


def via_host(ctl, rows) -> "str | None":
    """The remote host that holds the segment's ``.1`` (the first gateway's), or None."""
    from vc import disks

    first = next((r.get("host") for r in rows if r.get("host")), None)
    return first if first and disks.is_remote(ctl.cfg, first) else None


def nodes(db, rack) -> List[dict]:
    return db.query("SELECT name, ip, host, state, readiness, booted_at, up_at FROM vcnode "
                    "WHERE rack = %s ORDER BY appliance = 'compute', `rank`", (rack,))


def observe(ctl, rack: int, wait: float = 0.0, poll: float = 0.5,
            probe: Callable[[str], bool] = None) -> Dict[str, str]:
    """Probe the booting nodes of a cluster and record what is seen; with ``wait``, keep probing
    for up to that many seconds until every node is up.

    :returns: ``{node name: readiness}``.
    """
    probe = probe or getattr(ctl, "probe", None) or ssh_answers
    limit = timedelta(seconds=ctl.cfg.virt.ready_timeout)
    deadline = time.monotonic() + wait
    while True:
        rows = nodes(ctl.db, rack)
        pending = [r for r in rows if r["readiness"] != UP and r["state"] == "running"]
        via = via_host(ctl, rows)
        ex_via = ctl.host_exec(via) if via and pending else None

        def look(r, ex_via=ex_via):
            return probe(r["ip"]) or (ex_via is not None and ssh_answers_via(ex_via, r["ip"]))

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(pending) or 1))) as ex:
            seen = list(ex.map(look, pending))
        now = ctl.clock()
        for r, ok in zip(pending, seen):
            late = r["booted_at"] is not None and now - aware_utc(r["booted_at"]) > limit
            new = UP if ok else (LATE if late else BOOTING)
            if new != r["readiness"]:
                _record(ctl, rack, r["name"], new, now)
                r["readiness"] = new
        out = {r["name"]: r["readiness"] for r in rows}
        if all(v == UP for v in out.values()) or time.monotonic() >= deadline:
            return out
        time.sleep(poll)


def _record(ctl, rack, name, readiness, now):
    def run(cur):
        cur.execute("UPDATE vcnode SET readiness = %s, up_at = %s WHERE rack = %s AND name = %s",
                    (readiness, naive_utc(now) if readiness == UP else None, rack, name))

    ctl.db.transaction(run)
    if readiness == LATE:
        ctl.event(rack, "ready: %s not up within %ds of its boot" % (
            name, ctl.cfg.virt.ready_timeout))
    elif readiness == UP:
        LOG.info("rack %d: %s is up", rack, name)


def summary(states: Dict[str, str]) -> str:
    """``ready``, or what is missing (``booting: compute-3-1``; ``late: …``)."""
    if states and all(v == UP for v in states.values()):
        return "ready"
    parts = []
    for kind in (LATE, BOOTING):
        names = [n for n, v in states.items() if v == kind]
        if names:
            parts.append("%s: %s" % (kind, ", ".join(names)))
    return "; ".join(parts) or "no nodes"
