"""The recording fakes every unit test shares: an executor and the registrar's DHCP seam.

:class:`RecordingExecutor` is a :class:`vc.remote.Executor` (so the code under test takes it
where it takes SSH or a local shell, and checks its argv the same way): it records every
command exactly as it would run, answers from scripted outputs, and fails where it is told to.
A test that needs a small model of a host (tgtd's targets, the kernel's links) subclasses it and
answers in :meth:`RecordingExecutor.respond`.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from vc import remote
from vc.errors import VcError

Output = Union[str, Callable[[List[str]], str]]


class RecordingExecutor(remote.Executor):
    """Records and answers commands.

    :param name: the host's name (messages, logs).
    :param outputs: ``{argv prefix (tuple): output}``: a command is answered by the longest
        prefix it starts with (an output may be ``fn(argv) -> str``); others answer "".
    :param is_target: it plays an iSCSI target host (failures are ``RemoteCommandError``).

    :attr calls: every command run, in order.
    :attr scripts: every batch, as ``run_script`` got it (``run`` is a batch of one).
    """

    def __init__(self, name: str = "fake", outputs: Optional[Dict[Tuple[str, ...], Output]] = None,
                 is_target: bool = False):
        self.name, self.is_target = name, is_target
        self.outputs: Dict[Tuple[str, ...], Output] = dict(outputs or {})
        self.calls: List[List[str]] = []
        self.scripts: List[List[List[str]]] = []
        self._failures: List[list] = []

    def fail(self, when: Union[int, Callable[[List[str]], bool]], stderr: str = "",
             returncode: int = 1, once: bool = True) -> None:
        """Make a command fail: the ``when``-th call (1-based), or each one ``when(argv)`` is
        true for (only the first of them with ``once``)."""
        self._failures.append([when, stderr, returncode, once])

    def respond(self, argv: List[str]) -> str:
        """The command's stdout (subclasses model a host here; raising is a failure)."""
        best = max((p for p in self.outputs if tuple(argv[:len(p)]) == p), key=len, default=None)
        if best is None:
            return ""
        out = self.outputs[best]
        return out(argv) if callable(out) else out

    def _failure(self, argv) -> Optional[list]:
        for f in self._failures:
            when = f[0]
            if when == len(self.calls) if isinstance(when, int) else when(argv):
                if f[3]:
                    self._failures.remove(f)
                return f
        return None

    def _run(self, argv: List[str]) -> str:
        return self._run_script([argv])[0]

    def _run_script(self, cmds: Sequence[List[str]]) -> List[str]:
        self.scripts.append(list(cmds))
        outs = []
        for argv in cmds:
            self.calls.append(argv)
            f = self._failure(argv)
            if f is not None:
                raise self._error(argv, f[2], f[1])
            outs.append(self.respond(argv))
        return outs


class RecordingDhcp:
    """The registrar's DHCP seam (``add_dhcp_host``/``remove_dhcp_host``): records calls; holds
    {(network, mac): (ip, name)} like a libvirt network's <dhcp>. ``fail_add_at`` /
    ``fail_remove_at``: the n-th add / remove raises."""

    def __init__(self, fail_add_at=None, fail_remove_at=None):
        self.hosts, self.calls = {}, []
        self.fail_add_at, self.fail_remove_at = fail_add_at, fail_remove_at

    def _record(self, op, network_name, mac, ip, name, fail_at):
        self.calls.append((op, network_name, mac, ip, name))
        if sum(c[0] == op for c in self.calls) == fail_at:
            raise VcError("libvirt said no")

    def add_dhcp_host(self, network_name, mac, ip, name):
        self._record("add", network_name, mac, ip, name, self.fail_add_at)
        if self.hosts.get((network_name, mac)) == (ip, name):
            return False
        self.hosts[(network_name, mac)] = (ip, name)
        return True

    def remove_dhcp_host(self, network_name, mac, ip, name):
        self._record("remove", network_name, mac, ip, name, self.fail_remove_at)
        return self.hosts.pop((network_name, mac), None) is not None


def with_config(cfg, section: str, **values):
    """``cfg`` with some keys of one section replaced, past the parser's checks: for a factory's
    own refusals (an unknown backend, a key it needs missing)."""
    import dataclasses

    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section),
                                                                   **values)})
