"""What a node *is*: pure policy, no I/O (Nova keeps the same kind of policy in ``designer.py``).

Given the configuration, the cluster's plan (:mod:`vc.addresses`) and its attached volumes, this
module says what each node's libvirt domain, kernel command-line context, insert-ethers dump
entry and file paths are. The steps (:mod:`vc.steps`) and HA (:mod:`vc.ha`) act on what it says;
the backends contribute their own pieces (the NIC from the isolation backend, the iSCSI disk from
the target backend), passed in here.
"""

import os
import re
from typing import List, Optional

from vc.domainxml import DiskSpec, DomainSpec, InterfaceSpec, IscsiDiskSpec

GATEWAY = "gateway"


def domain_name(cfg, node_name: str) -> str:
    return "%s-%s" % (cfg.virt.name_prefix, node_name)


def rack_re(cfg, rack: int):
    """Matches the domain (and disk/console file stem) names of one rack's nodes."""
    return re.compile(r"^%s-[a-z0-9]+-%d-\d+$" % (re.escape(cfg.virt.name_prefix), rack))


def disk_path(cfg, node_name: str) -> str:
    return os.path.join(cfg.virt.disk_dir, domain_name(cfg, node_name) + ".qcow2")


def console_path(cfg, node_name: str) -> str:
    return os.path.join(cfg.virt.console_dir, domain_name(cfg, node_name) + ".log")


def seed_path(cfg, node_name: str) -> str:
    """The node's cloud-init NoCloud seed (removed at stop with its disk)."""
    return os.path.join(cfg.virt.disk_dir, domain_name(cfg, node_name) + ".seed.iso")


def key_dir(cfg, rack: int) -> str:
    """The cluster's own SSH key pair (root on the gateway reaches every node with it)."""
    return os.path.join(cfg.site.state_dir, "keys", "rack-%d" % rack)


def dump_path(cfg, rack: int) -> str:
    return os.path.join(cfg.site.state_dir, "dumps", "rack-%d.dump" % rack)


def volume_target(i: int) -> str:
    """The guest disk name of the cluster's ``i``-th volume (``vda`` is the node's own disk)."""
    return "vd%s" % chr(ord("b") + i)


def context(plan, node, vols) -> str:
    """Kernel command-line keys that tell a guest its role and its storage: the gateway mounts
    its LUNs and exports them over NFS to the cluster subnet; the computes mount them from the
    gateway."""
    keys = ["vc.rack=%d" % plan.rack, "vc.role=%s" % node.appliance]
    gw = next((n for n in plan.nodes if n.appliance == GATEWAY), None)
    for i, v in enumerate(vols):
        export = v["nfs_export"] or v["mount_point"]
        if node.appliance == v["appliance"]:
            keys.append("vc.mount=/dev/%s:%s" % (volume_target(i), v["mount_point"]))
            keys.append("vc.nfs_export=%s:%s" % (export, plan.subnet))
        elif gw is not None:
            keys.append("vc.nfs_mount=%s:%s:%s" % (gw.ip, export,
                                                   v["nfs_client_mount"] or v["mount_point"]))
    return " ".join(keys)


def volume_serial(i: int) -> str:
    """What the guest sees as the ``i``-th volume's id: ``/dev/disk/by-id/virtio-vcvol<i>``
    (stable, unlike ``vdb``…, whose order depends on the PCI slots)."""
    return "vcvol%d" % i


def iscsi_disks(node, vols) -> List[IscsiDiskSpec]:
    """The cluster's LUNs, on the appliance that mounts them (the gateway); a volume with CHAP
    credentials logs in as its ``chap_user`` with the libvirt secret named by its IQN
    (``vc.iscsi.secret_usage``; the secret itself is never in the XML)."""
    return [IscsiDiskSpec(v["iqn"], v["address"], v["iscsi_port"], v["lun"],
                          target=volume_target(i), serial=volume_serial(i),
                          auth_user=v.get("chap_user") or None,
                          secret_usage=v["iqn"] if v.get("chap_user") else None)
            for i, v in enumerate(vols) if v["appliance"] == node.appliance]


def public_nic(cfg, node) -> Optional[InterfaceSpec]:
    """A gateway's second NIC, on ``[network] public_network`` (a libvirt network, or
    ``bridge:NAME``): the cluster's public face."""
    if not node.public_mac:
        return None
    where = cfg.network.public_network
    if where.startswith("bridge:"):
        return InterfaceSpec(mac=node.public_mac, bridge=where[len("bridge:"):])
    return InterfaceSpec(mac=node.public_mac, network=where)


def domain_spec(cfg, plan, node, vols, nic, seed: Optional[str] = None) -> DomainSpec:
    """A node's domain: its COW disk, the cluster's iSCSI LUNs when it is the appliance that
    mounts them, its cloud-init seed (read-only, serial ``cidata``), ``nic`` (the isolation
    backend's NIC on the cluster segment), a gateway's public NIC, and for direct kernel boot
    the context on the kernel command line (the seed is the contract; the keys stay for guests
    that read them).

    :param vols: the cluster's attached volumes (rows with ``iqn`` set).
    :param seed: the node's seed ISO (None: no seed disk).
    """
    app = cfg.appliance(node.appliance)
    kernel = app.kernel if app.boot == "kernel" else None
    cmdline = None
    if kernel:
        cmdline = " ".join(x for x in (app.cmdline, context(plan, node, vols)) if x)
    disks = [DiskSpec(disk_path(cfg, node.name))] + iscsi_disks(node, vols)
    if seed:
        disks.append(DiskSpec(seed, target=volume_target(len(vols)), fmt="raw", readonly=True,
                              serial="cidata"))
    return DomainSpec(
        name=domain_name(cfg, node.name), memory_mb=node.memory_mb, vcpus=node.vcpus,
        domain_type=cfg.virt.domain_type, kernel=kernel, initrd=app.initrd if kernel else None,
        cmdline=cmdline, disks=disks, interfaces=[x for x in (nic, public_nic(cfg, node)) if x],
        console_log=console_path(cfg, node.name), on_reboot="restart", rng=cfg.virt.rng,
        metadata={"rack": str(plan.rack), "node": node.name, "appliance": node.appliance})


def seed_input(cfg, plan, node, vols, authorized_keys, cluster_key, mtu=None, lease_token=None):
    """What the node's cloud-init seed says (see :mod:`vc.seed` and the README): its names and
    addresses, every node of the cluster in ``/etc/hosts``, root's keys (the owner's and the
    cluster's), and its storage role: the gateway formats (when blank), mounts and exports its
    volumes to the cluster subnet over NFS; the computes mount them from the gateway.

    :param cluster_key: ``(private OpenSSH text, public line)`` of the cluster's key pair.
    :param lease_token: the cluster's token for the lease service (:mod:`vc.metad`) on its
        ``.1``: with it every node gets ``vc-lease``, the token and a login message.
    """
    from vc import seed

    gw = next((n for n in plan.nodes if n.appliance == GATEWAY), None)
    is_gw = node.appliance == GATEWAY
    mine = [(i, v) for i, v in enumerate(vols) if v["appliance"] == node.appliance]
    return seed.SeedInput(
        rack=plan.rack, name=node.name, appliance=node.appliance,
        instance_id="%s-%s-%s" % (cfg.virt.name_prefix, node.name, node.id),
        domain=cfg.site.cluster_domain, mac=node.mac, ip=node.ip,
        prefix=plan.subnet.prefixlen, mtu=mtu,
        public_mac=node.public_mac if is_gw else None,
        public_ip=node.public_ip if is_gw else None,
        public_prefix=cfg.network.public_prefix if is_gw else None,
        gateway4=cfg.network.public_gateway if is_gw else None,
        hosts=[(n.ip, n.name) for n in plan.nodes],
        authorized_keys=list(authorized_keys) + [cluster_key[1]],
        cluster_private_key=cluster_key[0] if is_gw else None,
        cluster_public_key=cluster_key[1] if is_gw else None,
        volumes=[(volume_serial(i), v["mount_point"], v["nfs_export"] or v["mount_point"])
                 for i, v in mine],
        nfs_mounts=[(gw.ip, v["nfs_export"] or v["mount_point"],
                     v["nfs_client_mount"] or v["mount_point"])
                    for v in vols if v["appliance"] != node.appliance and gw is not None],
        subnet=str(plan.subnet),
        lease_url="http://%s:%d" % (plan.bridge_ip, cfg.notify.metad_port) if lease_token
        else None,
        lease_token=lease_token)



def entries(cfg, plan) -> list:
    """The cluster's insert-ethers entries (rack = cluster number, rank = node number)."""
    from vc import register

    return [register.NodeEntry(hostname=n.name, rack=plan.rack, rank=n.rank, cpus=n.vcpus,
                               appliance=cfg.membership(n.appliance), mac=n.mac, device="eth0",
                               module="virtio_net", ipaddr=n.ip, netmask=plan.netmask)
            for n in plan.nodes]


def initiators(cfg, plan) -> List[str]:
    """Who may log in to the cluster's LUNs: the hypervisor hosts of its gateways (QEMU's own
    initiator runs there)."""
    out = []
    for n in plan.nodes:
        if n.appliance == GATEWAY:
            h = next(h for h in cfg.hosts if h.name == n.host)
            ini = h.initiator or h.underlay_ip or "127.0.0.1"
            if ini not in out:
                out.append(ini)
    return out
