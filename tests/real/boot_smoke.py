#!/usr/bin/env python3
"""Boot smoke test of the real libvirt/QEMU stack (not part of the unit test suite).

    tools/virt.sh start
    tools/make-guest.sh var/guest
    <venv with libvirt-python>/bin/python tests/real/boot_smoke.py [--guest-dir var/guest] [--noacpid]

Defines an isolated libvirt network vcsmoke-net (bridge vcsmk0, 10.251.7.1/24, DHCP .100-.200),
reserves 52:54:00:fe:00:01 -> 10.251.7.11 / smoke-0-0 with virNetworkUpdate, boots the TCG guest
vcsmoke-0 (128 MiB, direct kernel boot, serial console to a file), waits for
"VC-IP eth0 10.251.7.11 hostname=smoke-0-0" on its console, shuts it down over ACPI (destroy
after 20 s as the fallback), then removes the domain and the network. Prints timings.

Exit 0 only if every step worked (with --noacpid the guest ignores ACPI, and the destroy
fallback is the expected path). The domain and the network are always removed.
"""
import argparse
import os
import re
import sys
import time

import libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
URI = "qemu:///system"
NET = "vcsmoke-net"
BRIDGE = "vcsmk0"
DOM = "vcsmoke-0"
MAC = "52:54:00:fe:00:01"
IP = "10.251.7.11"
HOST = "smoke-0-0"

NET_XML = f"""<network>
  <name>{NET}</name>
  <bridge name='{BRIDGE}' stp='off' delay='0'/>
  <ip address='10.251.7.1' netmask='255.255.255.0'>
    <dhcp><range start='10.251.7.100' end='10.251.7.200'/></dhcp>
  </ip>
</network>"""


def dom_xml(guest_dir, console, cmdline):
    return f"""<domain type='qemu'>
  <name>{DOM}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest_dir}/vmlinux</kernel>
    <initrd>{guest_dir}/initrd.img</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='network'>
      <mac address='{MAC}'/>
      <source network='{NET}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def log(msg):
    print(f"boot_smoke: {msg}", flush=True)


def lookup(fn, name):
    try:
        return fn(name)
    except libvirt.libvirtError:
        return None


def remove_domain(conn, name):
    dom = lookup(conn.lookupByName, name)
    if dom is None:
        return
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as e:
        log(f"cleanup: destroy {name}: {e}")
    try:
        dom.undefine()
        log(f"cleanup: undefined domain {name}")
    except libvirt.libvirtError as e:
        log(f"cleanup: undefine {name}: {e}")


def remove_network(conn, name):
    net = lookup(conn.networkLookupByName, name)
    if net is None:
        return
    try:
        if net.isActive():
            net.destroy()
    except libvirt.libvirtError as e:
        log(f"cleanup: net-destroy {name}: {e}")
    try:
        net.undefine()
        log(f"cleanup: undefined network {name}")
    except libvirt.libvirtError as e:
        log(f"cleanup: net-undefine {name}: {e}")


def read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_state(dom, state, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if dom.state()[0] == state:
            return True
        time.sleep(0.05)
    return dom.state()[0] == state


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest-dir", default=os.path.join(ROOT, "var", "guest"),
                    help="directory with vmlinux and initrd.img (default: <repo>/var/guest)")
    ap.add_argument("--boot-timeout", type=float, default=60.0)
    ap.add_argument("--shutdown-timeout", type=float, default=20.0)
    ap.add_argument("--noacpid", action="store_true",
                    help="guest ignores ACPI (vc.noacpid=1): the destroy fallback is expected")
    args = ap.parse_args()

    guest_dir = os.path.abspath(args.guest_dir)
    for f in ("vmlinux", "initrd.img"):
        if not os.path.isfile(os.path.join(guest_dir, f)):
            log(f"FAIL: {guest_dir}/{f} missing (run tools/make-guest.sh {guest_dir})")
            return 2
    var = os.environ.get("VC_VAR") or os.path.join(ROOT, "var")
    logdir = os.path.join(os.path.abspath(var), "logs")
    os.makedirs(logdir, exist_ok=True)
    console = os.path.join(logdir, f"{DOM}.console.log")
    if os.path.exists(console):
        os.unlink(console)
    cmdline = "console=ttyS0 panic=-1 quiet" + (" vc.noacpid=1" if args.noacpid else "")

    # libvirt prints every error on stderr by default; the ones that matter are reported below
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    t = {}
    ok = False
    t_all = time.monotonic()
    conn = libvirt.open(URI)
    try:
        # leftovers of an interrupted run (only our own names)
        remove_domain(conn, DOM)
        remove_network(conn, NET)

        t0 = time.monotonic()
        net = conn.networkDefineXML(NET_XML)
        net.create()
        t["net define+start"] = time.monotonic() - t0

        t0 = time.monotonic()
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                   libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                   f"<host mac='{MAC}' name='{HOST}' ip='{IP}'/>",
                   libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
        t["dhcp host update"] = time.monotonic() - t0

        t0 = time.monotonic()
        dom = conn.defineXML(dom_xml(guest_dir, console, cmdline))
        dom.create()
        t_started = time.monotonic()
        t["domain define+start"] = t_started - t0

        want = re.compile(rf"^VC-IP eth0 {re.escape(IP)} hostname={re.escape(HOST)} mac={MAC}\s*$", re.M)
        end = t_started + args.boot_timeout
        while True:
            text = read(console)
            if want.search(text):
                break
            if "VC-DHCP-FAILED" in text:
                raise RuntimeError("guest reported VC-DHCP-FAILED")
            if not dom.isActive():
                raise RuntimeError("guest stopped before printing its IP")
            if time.monotonic() > end:
                raise RuntimeError(f"no 'VC-IP eth0 {IP} hostname={HOST}' within {args.boot_timeout:.0f} s")
            time.sleep(0.05)
        t["start -> VC-IP"] = time.monotonic() - t_started
        log(f"guest console: {want.search(text).group(0).strip()}")

        # VC-READY follows quickly; acpid is started before DHCP, so ACPI works from here on
        t0 = time.monotonic()
        dom.shutdown()
        acpi = wait_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, args.shutdown_timeout)
        if acpi:
            t["ACPI shutdown -> SHUTOFF"] = time.monotonic() - t0
        else:
            log(f"guest still running {args.shutdown_timeout:.0f} s after ACPI shutdown: destroy")
            t1 = time.monotonic()
            dom.destroy()
            if not wait_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, 10):
                raise RuntimeError("destroy did not reach SHUTOFF")
            t["destroy -> SHUTOFF"] = time.monotonic() - t1
        text = read(console)
        if acpi and "VC-ACPI" not in text:
            raise RuntimeError("SHUTOFF without the guest's VC-ACPI line")
        if acpi == args.noacpid:
            raise RuntimeError("ACPI shutdown " + ("worked although the guest ignores ACPI"
                                                   if args.noacpid else "was ignored (fallback destroy used)"))

        t0 = time.monotonic()
        dom.undefine()
        net.destroy()
        net.undefine()
        t["undefine + net destroy/undefine"] = time.monotonic() - t0
        ok = True
    except (libvirt.libvirtError, RuntimeError) as e:
        log(f"FAIL: {e}")
        tail = read(console).splitlines()[-15:]
        if tail:
            log("console tail:\n  " + "\n  ".join(tail))
    finally:
        remove_domain(conn, DOM)
        remove_network(conn, NET)
        conn.close()
    for k, v in t.items():
        log(f"{k:34s} {v:6.2f} s")
    log(f"{'total':34s} {time.monotonic() - t_all:6.2f} s")
    log("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
