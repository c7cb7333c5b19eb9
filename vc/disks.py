"""Node disk images: qcow2 overlays over a base image, made with ``qemu-img``.

Not libvirt (:mod:`vc.virt`): plain files on the host, made through an injected
``execute(argv) -> stdout`` (:func:`vc.remote.run_local` by default; any
:class:`vc.remote.Executor` will do), so tests can record the exact command lines.

A node's disk holds its cluster's data: the overlay is mode 600 and the directories of the
disks and of the console logs are 700 (:func:`private_dir`), so no other account on the host
reads them (QEMU runs as root here, ``[qemu.conf] user = "root"``; a host whose QEMU runs as
another user needs that user to own or share these directories).
"""

import json
import logging
import os
from typing import Optional

from vc.errors import HypervisorError
from vc.remote import Execute, run_local

LOG = logging.getLogger(__name__)


#: ``{(path, size, mtime_ns, execute): format}``: a cluster's nodes share a few base images,
#: and ``qemu-img info`` is a process start each (~15 ms)
_FORMATS: dict = {}


def image_format(path: str, execute: Optional[Execute] = None) -> str:
    """The format (``raw``, ``qcow2``, ...) of an image, as ``qemu-img info`` detects it;
    remembered while the file keeps its size and modification time."""
    execute = execute or run_local
    try:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns, execute)
    except OSError:
        key = None
    if key in _FORMATS:
        return _FORMATS[key]
    out = execute(["qemu-img", "info", "--output=json", path])
    try:
        fmt = json.loads(out)["format"]
    except (ValueError, KeyError, TypeError) as e:
        raise HypervisorError("cannot read the format of %s from qemu-img info: %r"
                              % (path, out[:200])) from e
    if key is not None:
        _FORMATS[key] = fmt
    return fmt


def private_dir(path: str) -> bool:
    """Make directory ``path`` (and its parents) exist with mode 700 (only root enters it).

    :returns: True if it was made or its mode tightened.
    """
    changed = not os.path.isdir(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
        changed = True
    return changed


def create_cow_disk(path: str, base: str, size_gb: int, execute: Optional[Execute] = None) -> bool:
    """Create a qcow2 overlay ``path`` over the image ``base``, ``size_gb`` GiB large, mode 600
    in a directory of mode 700 (:func:`private_dir`).

    :returns: False if ``path`` already exists (it is kept: it may hold a node's data).
    """
    # qemu-img stores the backing path as given and resolves a relative one against the
    # overlay's directory, not ours; and -F is required since QEMU 6.1 (no format probing)
    path, base = os.path.abspath(path), os.path.abspath(base)
    # before the file: qemu-img makes it 644 (umask), and nobody may open it in between
    private_dir(os.path.dirname(path))
    execute = execute or run_local
    if os.path.exists(path):
        LOG.debug("disk %s exists", path)
        if os.stat(path).st_mode & 0o077:  # made before disks were private
            os.chmod(path, 0o600)
        return False
    fmt = image_format(base, execute)
    execute(["qemu-img", "create", "-f", "qcow2", "-F", fmt, "-b", base, path,
             "%dG" % int(size_gb)])
    if os.path.exists(path):   # (an executor that only records commands made no file)
        os.chmod(path, 0o600)
    LOG.info("created disk %s over %s (%s, %d GiB)", path, base, fmt, int(size_gb))
    return True


def make_base_image(path: str, size_mb: int, execute: Optional[Execute] = None,
                    fmt: str = "qcow2") -> bool:
    """Create an empty base image (for the demo and the tests). :returns: False if it exists."""
    if os.path.exists(path):
        return False
    execute = execute or run_local
    execute(["qemu-img", "create", "-f", fmt, os.path.abspath(path), "%dM" % int(size_mb)])
    LOG.info("created base image %s (%s, %d MiB)", path, fmt, int(size_mb))
    return True


def remove_disk(path: str) -> bool:
    """Delete a disk image. :returns: False if it did not exist."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    LOG.info("removed disk %s", path)
    return True


def remove_matching(directory: str, match) -> list:
    """Remove the files in local ``directory`` whose stem (before the first dot) ``match``
    accepts (:func:`remove_matching_on` on a remote host). :returns: the names removed."""
    names = [f for f in (os.listdir(directory) if os.path.isdir(directory) else ())
             if match(f.split(".", 1)[0])]
    for f in names:
        os.unlink(os.path.join(directory, f))
    return names


##################
# On a host      #
##################
# A node's disk and seed live on the host that runs it. On a remote host (a ``qemu+ssh://``
# URI) they are made, written and removed there through the host's executor (the same SSH trust
# as libvirt's transport); the base image must exist there at the same path.


def is_remote(cfg, host_name: str) -> bool:
    """Does the host's libvirt URI name another machine (``qemu+ssh://user@host/...``)?"""
    from urllib.parse import urlsplit

    uri = next((h.uri for h in cfg.hosts if h.name == host_name), "")
    return bool(urlsplit(uri).hostname)


#: one remote exec per disk (each SSH round trip costs 0.1-0.5 s): the directories, then the
#: overlay over the base image unless it exists; prints ``created`` or ``exists``
_REMOTE_DISK = "; ".join([
    'set -e', 'd=$(dirname "$1")', 'mkdir -p -m 700 "$d" "$4"', 'chmod 700 "$d" "$4"',
    'if [ -e "$1" ]; then chmod 600 "$1"; echo exists; exit 0; fi',
    '[ -e "$2" ] || { echo "base image $2 is missing on this host" >&2; exit 3; }',
    r"""fmt=$(qemu-img info --output=json "$2" | sed -n 's/^ *"format": "\([^"]*\)".*/\1/p' """
    '| head -n 1)',
    '[ -n "$fmt" ] || { echo "cannot read the format of $2" >&2; exit 3; }', 'umask 077',
    'qemu-img create -q -f qcow2 -F "$fmt" -b "$2" "$1" "$3"', 'chmod 600 "$1"',
    'echo created "$fmt"'])


def create_cow_disk_on(execute: Execute, path: str, base: str, size_gb: int,
                       console_dir: Optional[str] = None) -> bool:
    """:func:`create_cow_disk` on a remote host, in one exec through ``execute`` (also makes
    ``console_dir`` there, mode 700). :returns: False if the disk exists (it is kept)."""
    path, base = os.path.abspath(path), os.path.abspath(base)
    out = execute(["sh", "-c", _REMOTE_DISK, "sh", path, base, "%dG" % int(size_gb),
                   os.path.abspath(console_dir or os.path.dirname(path))]).strip()
    if out == "exists":
        LOG.debug("disk %s exists on its host", path)
        return False
    LOG.info("created disk %s over %s on its host (%s, %d GiB)", path, base, out, int(size_gb))
    return True


def write_file_on(executor, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 600, atomically) on the executor's host, over stdin."""
    executor.run_input(["sh", "-c", 'set -e; umask 077; mkdir -p -m 700 "$(dirname "$1")"; '
                        'cat > "$1.tmp"; mv -f "$1.tmp" "$1"', "sh", path], data)


def remove_matching_on(execute: Execute, directory: str, match) -> list:
    """Remove the files in ``directory`` on a host whose stem (before the first dot) ``match``
    accepts. :returns: the names removed."""
    out = execute(["sh", "-c", '[ -d "$1" ] && ls -1A "$1" || true', "sh", directory])
    names = [f for f in out.split() if match(f.split(".", 1)[0])]
    if names:
        execute(["rm", "-f", "--"] + [os.path.join(directory, f) for f in names])
    return names
