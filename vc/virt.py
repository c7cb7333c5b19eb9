"""The hypervisor boundary: libvirt networks and domains on one host.

This is the only VC module that imports ``libvirt``. A :class:`Host` wraps one connection
(``qemu:///system``, ``qemu+ssh://host/system``, or ``test:///<file>`` in the tests), opened on
first use. Every libvirt error leaves this module as a :class:`HypervisorError` naming the host
and the operation, with the ``libvirtError`` as its ``__cause__``; "no such domain/network" is
:class:`NotFoundOnHost`, or simply "nothing to do" where idempotency needs it.

Every verb is idempotent and returns whether it changed anything (``define`` of an unchanged
domain, ``start`` of a running one, ``destroy`` of a missing one all return False), so a
start or stop that died half way can simply be run again.

Node disk images are :mod:`vc.disks`; commands on a host go through :mod:`vc.remote`.
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from typing import Callable, Iterable, List, Optional, Union
from urllib.parse import urlsplit

try:
    import libvirt
except ImportError:  # pragma: no cover - the web pages and pure unit tests run without it
    libvirt = None

from vc import domainxml
from vc.domainxml import DhcpHost, DomainSpec, NetworkSpec, SecretSpec
from vc.errors import HypervisorError, NotFound
from vc.remote import CommandError  # noqa: F401 - tests/test_ctl.py still names virt.CommandError

LOG = logging.getLogger(__name__)


def _lv(name: str, abi: int) -> int:
    """``libvirt.<name>``, or its ABI value when the binding is missing (then only fake
    connections can be used, and they do not care)."""
    return getattr(libvirt, name, abi)


ERR_INTERNAL_ERROR = _lv("VIR_ERR_INTERNAL_ERROR", 1)
ERR_NO_SUPPORT = _lv("VIR_ERR_NO_SUPPORT", 3)
ERR_INVALID_ARG = _lv("VIR_ERR_INVALID_ARG", 8)
ERR_NO_DOMAIN = _lv("VIR_ERR_NO_DOMAIN", 42)
ERR_NO_NETWORK = _lv("VIR_ERR_NO_NETWORK", 43)
ERR_OPERATION_INVALID = _lv("VIR_ERR_OPERATION_INVALID", 55)
ERR_NO_SECRET = _lv("VIR_ERR_NO_SECRET", 66)
SECRET_USAGE_ISCSI = _lv("VIR_SECRET_USAGE_TYPE_ISCSI", 3)

XML_INACTIVE = _lv("VIR_DOMAIN_XML_INACTIVE", 2)
UNDEFINE_FLAGS = (_lv("VIR_DOMAIN_UNDEFINE_MANAGED_SAVE", 1)
                  | _lv("VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA", 2)
                  | _lv("VIR_DOMAIN_UNDEFINE_NVRAM", 4))
NET_UPDATE_ADD_LAST = _lv("VIR_NETWORK_UPDATE_COMMAND_ADD_LAST", 3)
NET_UPDATE_DELETE = _lv("VIR_NETWORK_UPDATE_COMMAND_DELETE", 2)
NET_SECTION_DHCP_HOST = _lv("VIR_NETWORK_SECTION_IP_DHCP_HOST", 4)
NET_AFFECT_LIVE = _lv("VIR_NETWORK_UPDATE_AFFECT_LIVE", 1)
NET_AFFECT_CONFIG = _lv("VIR_NETWORK_UPDATE_AFFECT_CONFIG", 2)
MIGRATE_LIVE = _lv("VIR_MIGRATE_LIVE", 1)
MIGRATE_PERSIST_DEST = _lv("VIR_MIGRATE_PERSIST_DEST", 8)
MIGRATE_UNDEFINE_SOURCE = _lv("VIR_MIGRATE_UNDEFINE_SOURCE", 16)
MIGRATE_NON_SHARED_INC = _lv("VIR_MIGRATE_NON_SHARED_INC", 128)
MIGRATE_UNSAFE = _lv("VIR_MIGRATE_UNSAFE", 512)
MIGRATE_PARAM_URI = _lv("VIR_MIGRATE_PARAM_URI", "migrate_uri")

# virDomainState -> VC's names. SHUTDOWN means "shutting down": the guest still runs (and must
# be destroyed if it never finishes), so it counts as running.
_STATES = {
    _lv("VIR_DOMAIN_RUNNING", 1): "running",
    _lv("VIR_DOMAIN_BLOCKED", 2): "running",
    _lv("VIR_DOMAIN_SHUTDOWN", 4): "running",
    _lv("VIR_DOMAIN_PAUSED", 3): "paused",
    _lv("VIR_DOMAIN_PMSUSPENDED", 7): "paused",
    _lv("VIR_DOMAIN_SHUTOFF", 5): "shutoff",
    _lv("VIR_DOMAIN_CRASHED", 6): "crashed",
}
STATES = ("running", "shutoff", "paused", "crashed", "other", "absent")

if libvirt is not None:
    LibvirtError = libvirt.libvirtError
else:  # pragma: no cover

    class LibvirtError(Exception):
        """Stands in for ``libvirt.libvirtError`` when the binding is missing (never raised)."""


##################
# Exceptions     #
##################


class NotFoundOnHost(HypervisorError, NotFound):
    """The domain or network an operation needs does not exist on the host."""

    msg_fmt = "host %(host)s: no such %(what)s: %(key)s"


def _detail(err: Exception) -> str:
    msg = err.get_error_message() if hasattr(err, "get_error_message") else None
    return msg or str(err)


def _code(err: Exception) -> Optional[int]:
    return err.get_error_code() if hasattr(err, "get_error_code") else None


_silenced = False


def _silence_libvirt() -> None:
    """Stop libvirt printing every error on stderr: each one reaches the caller as an exception,
    and a cron job's stderr would be mailed."""
    global _silenced
    if not _silenced and libvirt is not None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _silenced = True


##################
# The host       #
##################


class Host:
    """One libvirt connection and VC's idempotent verbs on it.

    :param uri: the libvirt URI.
    :param name: how messages name the host (default: the URI).
    :param opener: ``opener(uri) -> connection``, for tests (default ``libvirt.open``).
    :param connect_uri: the URI to open instead of ``uri`` (default ``uri``).
    """

    # where the QEMU driver of a system daemon writes <domain>.pid
    QEMU_RUN_DIR = "/run/libvirt/qemu"

    def __init__(self, uri: str, name: Optional[str] = None,
                 opener: Optional[Callable[[str], object]] = None,
                 connect_uri: Optional[str] = None):
        self.uri = uri
        # what is opened (the URI plus VC's shared-SSH command=); messages name ``uri``
        self.connect_uri = connect_uri or uri
        self.name = name or uri
        self._opener = opener
        self._conn = None
        # libvirt's test driver has no secret driver: a test: host keeps its secrets here
        # (per Host, as the test driver keeps everything per connection)
        self._test_secrets: Optional[dict] = {} if uri.startswith("test:") else None

    def __repr__(self):
        return "Host(%r, name=%r)" % (self.uri, self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- connection ----------------------------------------------------------------------------

    @property
    def state_per_connection(self) -> bool:
        """True for libvirt's test driver: each connection starts from its file, so whoever
        wants to see this host's domains must share this connection instead of opening one."""
        return self.uri.startswith("test:")

    @property
    def conn(self):
        """The libvirt connection, opened on first use and reopened if it has died (libvirtd
        restarted, SSH dropped), as Nova's ``Host`` does."""
        if self._conn is not None and not self._alive():
            LOG.warning("host %s: connection to %s lost, reconnecting", self.name, self.uri)
            self._conn = None
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self):
        opener = self._opener
        if opener is None:
            if libvirt is None:
                raise HypervisorError(host=self.name, op="connect to %s" % self.uri,
                                      detail="the libvirt Python binding is not installed")
            _silence_libvirt()
            opener = libvirt.open
        try:
            conn = opener(self.connect_uri)
        except LibvirtError as e:
            raise self._error("connect to %s" % self.uri, e) from e
        LOG.debug("host %s: connected to %s", self.name, self.uri)
        return conn

    def _alive(self) -> bool:
        is_alive = getattr(self._conn, "isAlive", None)
        if is_alive is None:
            return True
        try:
            return bool(is_alive())
        except LibvirtError:
            return False

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except LibvirtError as e:
                LOG.debug("host %s: close: %s", self.name, _detail(e))

    # -- errors --------------------------------------------------------------------------------

    def _error(self, op: str, err: Exception) -> HypervisorError:
        return HypervisorError(host=self.name, op=op, detail=_detail(err), code=_code(err))

    @contextlib.contextmanager
    def _op(self, op: str):
        """Turn a libvirtError raised inside the block into a HypervisorError about ``op``."""
        try:
            yield
        except LibvirtError as e:
            raise self._error(op, e) from e

    def _domain(self, name: str):
        """The virDomain called ``name``, or None."""
        try:
            return self.conn.lookupByName(name)
        except LibvirtError as e:
            if _code(e) == ERR_NO_DOMAIN:
                return None
            raise self._error("look up domain %s" % name, e) from e

    def _network(self, name: str):
        """The virNetwork called ``name``, or None."""
        try:
            return self.conn.networkLookupByName(name)
        except LibvirtError as e:
            if _code(e) == ERR_NO_NETWORK:
                return None
            raise self._error("look up network %s" % name, e) from e

    def _need_domain(self, name: str):
        dom = self._domain(name)
        if dom is None:
            raise NotFoundOnHost(host=self.name, what="domain", key=name, code=ERR_NO_DOMAIN)
        return dom

    def _need_network(self, name: str):
        net = self._network(name)
        if net is None:
            raise NotFoundOnHost(host=self.name, what="network", key=name, code=ERR_NO_NETWORK)
        return net

    @staticmethod
    def _quietly(fn, default=None):
        """``fn()``, or ``default`` if libvirt fails: for facts gathered while handling an error."""
        try:
            return fn()
        except LibvirtError:
            return default

    ##################
    # Networks       #
    ##################

    def network_exists(self, name: str) -> bool:
        return self._network(name) is not None

    def list_networks(self, prefix: str = "") -> List[str]:
        """Names of all networks (active or not) starting with ``prefix``, sorted."""
        with self._op("list networks"):
            names = [n.name() for n in self.conn.listAllNetworks(0)]
        return sorted(n for n in names if n.startswith(prefix))

    def ensure_network(self, spec: NetworkSpec) -> bool:
        """Define and start the network unless it is already running.

        A network that already exists is not redefined (its DHCP hosts change while it runs);
        if its bridge or subnet differ from ``spec`` a warning is logged.

        :returns: True if anything was defined, started or had its autostart turned off.
        """
        changed = False
        net = self._network(spec.name)
        if net is None:
            xml = spec.to_xml()
            try:
                net = self.conn.networkDefineXML(xml)
            except LibvirtError as e:
                LOG.exception("host %s: defining network %s failed; XML:\n%s", self.name,
                              spec.name, xml)
                raise self._error("define network %s" % spec.name, e) from e
            LOG.info("host %s: defined network %s", self.name, spec.name)
            LOG.debug("host %s: network %s XML:\n%s", self.name, spec.name, xml)
            changed = True
        else:
            current = self._quietly(lambda: net.XMLDesc(0))
            if current and (domainxml.network_fingerprint(current)
                            != domainxml.network_fingerprint(spec.to_xml())):
                LOG.warning("host %s: network %s exists with other settings than VC's; "
                            "using it as it is", self.name, spec.name)
        with self._op("start network %s" % spec.name):
            # VC owns the lifecycle: an autostarted network would come back after a daemon
            # restart although its reservation has ended
            if net.isPersistent() and net.autostart():
                net.setAutostart(0)
                changed = True
            if not net.isActive():
                try:
                    net.create()
                except LibvirtError:
                    LOG.exception("host %s: starting network %s failed; XML:\n%s", self.name,
                                  spec.name, self._quietly(lambda: net.XMLDesc(0)))
                    raise
                LOG.info("host %s: started network %s", self.name, spec.name)
                changed = True
        return changed

    def remove_network(self, name: str) -> bool:
        """Stop and undefine the network. :returns: False if it did not exist."""
        net = self._network(name)
        if net is None:
            return False
        try:
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()
        except LibvirtError as e:
            if _code(e) != ERR_NO_NETWORK:  # removed under us: the goal is reached anyway
                raise self._error("remove network %s" % name, e) from e
        LOG.info("host %s: removed network %s", self.name, name)
        return True

    def dhcp_hosts(self, name: str) -> List[DhcpHost]:
        """The DHCP reservations of the network (the live ones when it runs)."""
        net = self._need_network(name)
        with self._op("read network %s" % name):
            return domainxml.parse_dhcp_hosts(net.XMLDesc(0))

    def _update_flags(self, net) -> int:
        # LIVE needs a running network and CONFIG a persistent one; a change must reach both
        # where they exist, or dnsmasq and the saved config drift apart
        flags = 0
        if net.isActive():
            flags |= NET_AFFECT_LIVE
        if net.isPersistent():
            flags |= NET_AFFECT_CONFIG
        return flags

    def add_dhcp_host(self, name: str, host: DhcpHost) -> bool:
        """Reserve ``host.ip`` and ``host.name`` for ``host.mac`` on the network.

        :returns: False if exactly this entry is already there.
        :raises HypervisorError: another entry has the same MAC, IP or name ("conflicts").
        """
        net = self._need_network(name)
        with self._op("read network %s" % name):
            current = domainxml.parse_dhcp_hosts(net.XMLDesc(0))
        if host in current:
            return False
        for other in current:
            # libvirt itself refuses an entry that shares any of the three, with a message that
            # does not say which one; say it here
            if (other.mac == host.mac or other.ip == host.ip
                    or (host.name and other.name == host.name)):
                raise HypervisorError(
                    host=self.name, op="add DHCP host to network %s" % name,
                    detail="%s conflicts with the existing entry %s"
                    % (host.to_xml(), other.to_xml()))
        with self._op("add DHCP host %s to network %s" % (host.to_xml(), name)):
            net.update(NET_UPDATE_ADD_LAST, NET_SECTION_DHCP_HOST, -1, host.to_xml(),
                       self._update_flags(net))
        LOG.info("host %s: network %s: DHCP %s -> %s (%s)", self.name, name, host.mac, host.ip,
                 host.name)
        return True

    def remove_dhcp_host(self, name: str, host: DhcpHost) -> bool:
        """Remove exactly this reservation. :returns: False if the network does not have it."""
        net = self._network(name)
        if net is None:
            return False
        with self._op("read network %s" % name):
            current = domainxml.parse_dhcp_hosts(net.XMLDesc(0))
        if host not in current:
            return False
        with self._op("remove DHCP host %s from network %s" % (host.to_xml(), name)):
            net.update(NET_UPDATE_DELETE, NET_SECTION_DHCP_HOST, -1, host.to_xml(),
                       self._update_flags(net))
        LOG.info("host %s: network %s: removed DHCP %s -> %s", self.name, name, host.mac, host.ip)
        return True

    ##################
    # Secrets        #
    ##################

    @staticmethod
    def _secret_digest(usage: str, value: str) -> str:
        # what the secret's description says of its value, so that ensure_secret can tell an
        # unchanged value without reading it back (a private secret's value cannot be read).
        # 64 bits of a salted SHA-256 of a ~95-bit random secret: no help to anyone guessing it
        return hashlib.sha256(("vc-secret\0%s\0%s" % (usage, value)).encode()).hexdigest()[:16]

    def _secret_description(self, usage: str, value: str) -> str:
        return "VC: CHAP secret of iSCSI volume %s (value digest %s)" % (
            usage, self._secret_digest(usage, value))

    def _secret(self, usage: str):
        """The virSecret of iSCSI usage ``usage``, or None."""
        try:
            return self.conn.secretLookupByUsage(SECRET_USAGE_ISCSI, usage)
        except LibvirtError as e:
            if _code(e) == ERR_NO_SECRET:
                return None
            raise self._error("look up secret %s" % usage, e) from e

    def list_secrets(self, prefix: str = "") -> List[str]:
        """The usages of every iSCSI secret starting with ``prefix``, sorted."""
        if self._test_secrets is not None:
            return sorted(u for u in self._test_secrets if u.startswith(prefix))
        with self._op("list secrets"):
            usages = [sec.usageID() for sec in self.conn.listAllSecrets(0)
                      if sec.usageType() == SECRET_USAGE_ISCSI]
        return sorted(u for u in usages if u.startswith(prefix))

    def ensure_secret(self, usage: str, value: str) -> bool:
        """Make the persistent, private iSCSI secret ``usage`` hold ``value`` (a CHAP secret
        QEMU logs in with: :class:`vc.domainxml.IscsiDiskSpec` ``secret_usage``). Define it
        before the domains that name it. The value is never logged.

        :returns: True if the secret was defined or its value changed.
        """
        if not value:
            raise ValueError("secret %s: empty value" % usage)
        if self._test_secrets is not None:
            changed = self._test_secrets.get(usage) != value
            self._test_secrets[usage] = value
            return changed
        description = self._secret_description(usage, value)
        sec = self._secret(usage)
        existed = sec is not None
        if existed:
            with self._op("read secret %s" % usage):
                if SecretSpec.from_xml(sec.XMLDesc(0)).description == description:
                    LOG.debug("host %s: secret %s is already set", self.name, usage)
                    return False
        with self._op("define secret %s" % usage):
            if sec is None:
                sec = self.conn.secretDefineXML(SecretSpec(
                    usage, "VC: CHAP secret of iSCSI volume %s (being set)" % usage).to_xml(), 0)
            # the value first, then the description that says which it is: a failure in between
            # leaves a description that does not match, and the next call sets the value again
            sec.setValue(value.encode(), 0)
            self.conn.secretDefineXML(SecretSpec(usage, description, sec.UUIDString()).to_xml(),
                                      0)
        LOG.info("host %s: %s secret %s", self.name, "updated" if existed else "defined", usage)
        return True

    def remove_secret(self, usage: str) -> bool:
        """Undefine the iSCSI secret ``usage``. :returns: False if there was none."""
        if self._test_secrets is not None:
            return self._test_secrets.pop(usage, None) is not None
        sec = self._secret(usage)
        if sec is None:
            return False
        try:
            sec.undefine()
        except LibvirtError as e:
            if _code(e) == ERR_NO_SECRET:  # removed under us: the goal is reached anyway
                return False
            raise self._error("remove secret %s" % usage, e) from e
        LOG.info("host %s: removed secret %s", self.name, usage)
        return True

    ##################
    # Domains        #
    ##################

    def list_domains(self, prefix: str = "") -> List[str]:
        """Names of all domains (running or not) starting with ``prefix``, sorted."""
        with self._op("list domains"):
            names = [d.name() for d in self.conn.listAllDomains(0)]
        return sorted(n for n in names if n.startswith(prefix))

    def define(self, spec: DomainSpec) -> bool:
        """Define the domain, or redefine it if it is shut off and its settings changed.

        A running domain whose definition differs is left alone (a warning is logged): the
        new definition applies after VC stops it and defines again.

        :returns: True if libvirt's definition was written.
        :raises HypervisorError: libvirt refused the XML (which is logged with the error).
        """
        return self._define(spec)[0]

    def launch(self, spec: DomainSpec) -> bool:
        """:meth:`define`, then :meth:`start` unless it runs, in the fewest libvirt calls: a
        new domain is three (look up, define, create) where the two verbs make seven — while
        a cluster's domains are being created at once every call waits for a libvirtd worker.

        :returns: True if it was started here (False: it was running already).
        """
        _, dom, new = self._define(spec)
        if not new and self._quietly(dom.isActive, False):
            return False
        return self._create(dom, spec.name)

    def _define(self, spec: DomainSpec):
        """:returns: ``(written, the virDomain, new)``: ``new`` — it did not exist before."""
        xml = spec.to_xml()
        dom = self._domain(spec.name)
        if dom is not None:
            with self._op("read domain %s" % spec.name):
                current = dom.XMLDesc(XML_INACTIVE)
                active = dom.isActive()
                uuid = dom.UUIDString()
            if spec.uuid and spec.uuid != uuid:
                raise HypervisorError(host=self.name, op="define domain %s" % spec.name,
                                      detail="it exists with UUID %s, not %s" % (uuid, spec.uuid))
            old, new = domainxml.domain_fingerprint(current), domainxml.domain_fingerprint(xml)
            if old == new:
                LOG.debug("host %s: domain %s is already defined as wanted", self.name, spec.name)
                return False, dom, False
            changed = ", ".join(k for k in new if old.get(k) != new[k])
            if active:
                LOG.warning("host %s: domain %s is running with another definition (%s differ); "
                            "leaving it as it is", self.name, spec.name, changed)
                return False, dom, False
            LOG.info("host %s: redefining domain %s (%s changed)", self.name, spec.name, changed)
            # libvirt refuses a second definition of a name without its UUID ("already exists
            # with uuid"), so the new one carries the old UUID
            xml = dataclasses.replace(spec, uuid=uuid).to_xml()
        try:
            defined = self.conn.defineXML(xml)
        except LibvirtError as e:
            LOG.exception("host %s: defining domain %s failed; XML:\n%s", self.name, spec.name, xml)
            raise self._error("define domain %s" % spec.name, e) from e
        LOG.info("host %s: defined domain %s", self.name, spec.name)
        LOG.debug("host %s: domain %s XML:\n%s", self.name, spec.name, xml)
        return True, defined, dom is None

    def start(self, name: str) -> bool:
        """Start the defined domain. :returns: False if it was already running.

        :raises NotFoundOnHost: it is not defined.
        """
        dom = self._need_domain(name)
        with self._op("start domain %s" % name):
            if dom.isActive():
                return False
        return self._create(dom, name)

    def _create(self, dom, name: str) -> bool:
        """``virDomainCreate``. :returns: False if someone else started it in between."""
        try:
            dom.create()
        except LibvirtError as e:
            # someone else started it in between (the test driver even calls that an internal
            # error, not OPERATION_INVALID), so look rather than trust the code
            if self._quietly(dom.isActive, False):
                return False
            LOG.exception("host %s: starting domain %s failed; XML:\n%s", self.name, name,
                          self._quietly(lambda: dom.XMLDesc(0)))
            raise self._error("start domain %s" % name, e) from e
        LOG.info("host %s: started domain %s", self.name, name)
        return True

    def state(self, name: str) -> str:
        """One of ``running``, ``shutoff``, ``paused``, ``crashed``, ``other``, ``absent``."""
        dom = self._domain(name)
        if dom is None:
            return "absent"
        try:
            code = dom.state()[0]
        except LibvirtError as e:
            if _code(e) == ERR_NO_DOMAIN:
                return "absent"
            raise self._error("read the state of domain %s" % name, e) from e
        return _STATES.get(code, "other")

    def _stop(self, name: str, verb: str) -> bool:
        """``shutdown`` or ``destroy``: False when there is nothing running to stop."""
        dom = self._domain(name)
        if dom is None:
            return False
        with self._op("%s domain %s" % (verb, name)):
            if not dom.isActive():
                return False
        try:
            getattr(dom, verb)()
        except LibvirtError as e:
            # Nova _destroy: "Domain already gone. This can safely be ignored."; an
            # OPERATION_INVALID (or any error) on a domain that has stopped meanwhile is fine
            if _code(e) == ERR_NO_DOMAIN or not self._quietly(dom.isActive, True):
                LOG.debug("host %s: %s %s: already stopped (%s)", self.name, verb, name,
                          _detail(e))
                return False
            raise self._error("%s domain %s" % (verb, name), e) from e
        LOG.info("host %s: %s domain %s", self.name,
                 "asked (ACPI) to shut down" if verb == "shutdown" else "destroyed", name)
        return True

    def shutdown(self, name: str) -> bool:
        """Press the ACPI power button. :returns: False if absent or not running.

        The guest may ignore it: follow with :meth:`wait_state` and :meth:`destroy`.
        """
        return self._stop(name, "shutdown")

    def destroy(self, name: str) -> bool:
        """Pull the plug. :returns: False if absent or not running."""
        return self._stop(name, "destroy")

    def undefine(self, name: str) -> bool:
        """Remove the definition (not the disks). :returns: False if it did not exist.

        :raises HypervisorError: the domain is running (libvirt would make it a transient
            domain that vanishes only when it stops; destroy it first).
        """
        dom = self._domain(name)
        if dom is None:
            return False
        with self._op("undefine domain %s" % name):
            if dom.isActive():
                raise HypervisorError(host=self.name, op="undefine domain %s" % name,
                                      detail="it is running; destroy it first",
                                      code=ERR_OPERATION_INVALID)
        try:
            try:
                # NVRAM and managed-save files would otherwise make undefine fail on hosts
                # that have them; drivers without them (the test driver) refuse the flags
                dom.undefineFlags(UNDEFINE_FLAGS)
            except LibvirtError as e:
                if _code(e) not in (ERR_INVALID_ARG, ERR_NO_SUPPORT):
                    raise
                LOG.debug("host %s: undefine %s with flags: %s; without", self.name, name,
                          _detail(e))
                dom.undefine()
        except LibvirtError as e:
            if _code(e) == ERR_NO_DOMAIN:
                return False
            raise self._error("undefine domain %s" % name, e) from e
        LOG.info("host %s: undefined domain %s", self.name, name)
        return True

    def migrate(self, name: str, dest: "Host", uri: Optional[str], flags: int,
                timeout: Optional[float] = None) -> None:
        """Migrate the domain to ``dest``, driven by this client (not peer to peer: the
        frontend talks to both daemons, the migration stream goes from this host's QEMU
        straight to ``uri``, e.g. ``tcp://<dest underlay address>``). ``timeout``: seconds
        after which the migration job is aborted (libvirt rolls it back: the domain keeps
        running here).

        :raises HypervisorError: the migration failed (or was aborted) — naming both hosts.
        """
        import threading

        dom = self._need_domain(name)
        params = {MIGRATE_PARAM_URI: uri} if uri else {}
        op = "migrate domain %s to %s" % (name, dest.name)
        dconn = dest.conn
        err: list = []

        def run():
            try:
                dom.migrate3(dconn, params, flags)
            except LibvirtError as e:
                err.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            LOG.warning("host %s: %s: no end after %s s: aborting the job", self.name, op,
                        timeout)
            self._quietly(dom.abortJob)
            t.join()
            raise HypervisorError(host=self.name, op=op, detail="aborted after %s s%s" % (
                timeout, (": " + _detail(err[0])) if err else ""))
        if err:
            raise self._error(op, err[0]) from err[0]
        LOG.info("host %s: migrated domain %s to %s", self.name, name, dest.name)

    def network_address(self, name: str) -> Optional[str]:
        """The host's own address on the network (where VC puts ``.1`` and DHCP), or None: a
        bare bridge, or no such network."""
        net = self._network(name)
        if net is None:
            return None
        with self._op("read network %s" % name):
            return domainxml.network_fingerprint(net.XMLDesc(0))["ip"][0]

    def domain_metadata(self, name: str) -> dict:
        """VC's metadata attributes of the domain (``{}`` if it is not VC's)."""
        dom = self._need_domain(name)
        with self._op("read domain %s" % name):
            return domainxml.domain_metadata(dom.XMLDesc(0))

    def wait_state(self, name: str, want: Union[str, Iterable[str]], timeout: float,
                   poll: float = 0.1, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
        """Poll :meth:`state` until it is ``want`` (a state or several). :returns: False on
        timeout."""
        wanted = {want} if isinstance(want, str) else set(want)
        deadline = clock() + timeout
        while True:
            if self.state(name) in wanted:
                return True
            left = deadline - clock()
            if left <= 0:
                return False
            sleep(min(poll, left))

    def qemu_pid(self, name: str) -> Optional[int]:
        """The PID of the domain's QEMU process, from the system QEMU driver's pid file.

        None when it is not readable: the domain is not running, or the host is remote (the
        file is on that host) or not a system QEMU driver.
        """
        parts = urlsplit(self.uri)
        if parts.scheme.split("+")[0] != "qemu" or parts.hostname or parts.path != "/system":
            return None
        try:
            with open(os.path.join(self.QEMU_RUN_DIR, name + ".pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def free_memory_mb(self) -> int:
        """Free memory of the host in MiB (placement spreads nodes by it)."""
        with self._op("read free memory"):
            try:
                free = self.conn.getFreeMemory()
            except LibvirtError as e:
                LOG.debug("host %s: getFreeMemory: %s", self.name, _detail(e))
                free = 0
            if free:
                return int(free) // (1024 * 1024)
            # the test driver answers 0: report the node's total memory instead
            return int(self.conn.getInfo()[1])
