"""Owners' SSH public keys: validation and normalisation (pure), and the per-cluster key pair.

A pasted key must be ONE OpenSSH public key line ``type base64 [comment]`` (what a ``.pub`` file
holds). The key itself is parsed by ``cryptography`` (``load_ssh_public_key``), so a damaged or
forged blob is refused, not merely a wrong-looking line. Accepted types: ``ssh-ed25519``,
``ecdsa-sha2-nistp256/384/521``, ``ssh-rsa`` of at least 2048 bits, and the FIDO/U2F security key
types ``sk-ssh-ed25519@openssh.com`` and ``sk-ecdsa-sha2-nistp256@openssh.com`` (the type is the
one embedded in the blob, which must match the line's; where ``cryptography`` cannot parse them
the blob's fields are checked here). Refused with a one-line message that never repeats the
paste: any private key (PEM, OpenSSH, PuTTY, a bare OpenSSH private blob), garbage, more than one
key, more than 16 KiB, unknown types and certificates, ``ssh-dss``, RSA under 2048 bits, a comment
with control characters or over 200 characters.
"""

import base64
import binascii
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import List, Optional, Tuple

from vc.errors import VcError

MAX_PASTE = 16 * 1024
MAX_COMMENT = 200
MIN_RSA_BITS = 2048
SK_TYPES = ("sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
         "ssh-rsa") + SK_TYPES
ACCEPTED = "ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa (2048 bits or more), " \
           "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com"
MAKE_ONE = "make one with: ssh-keygen -t ed25519"

# what a private key looks like in every format a user may have at hand
_PRIVATE = re.compile(r"PRIVATE\s+KEY|PuTTY-User-Key-File|b3BlbnNzaC1rZXktdjE")
_TOKEN = re.compile(r"^[A-Za-z0-9@._+-]{1,64}$")
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
# a key type followed by a key blob (every blob starts with the length of its type: AAAA...)
_KEY_START = re.compile(r"(?:^|\s)(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+\s+AAAA[A-Za-z0-9+/]")


class InvalidKey(VcError):
    """A pasted SSH key was refused; the message says why (never what was pasted)."""


class PrivateKeyPasted(InvalidKey):
    """The paste holds a private key: refused, never stored, never shown again."""

    msg_fmt = ("this is a PRIVATE key: it was not stored. Paste the public half instead (the "
               ".pub file, e.g. ~/.ssh/id_ed25519.pub); a private key never leaves your "
               "machine, so if you pasted it anywhere shared, make a new key pair")


@dataclass(frozen=True)
class PublicKey:
    """A validated public key: ``line`` is the normalised ``type base64 comment``."""

    key_type: str
    blob: str          # the base64 part, as OpenSSH writes it
    comment: str
    bits: int
    fingerprint: str   # SHA256:<unpadded base64>, as ssh-keygen -l prints it

    @property
    def line(self) -> str:
        return " ".join(p for p in (self.key_type, self.blob, self.comment) if p)


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key blob (the decoded base64 part): the one helper,
    :func:`vc.remote.fingerprint`."""
    from vc import remote

    return remote.fingerprint(blob)


def _read_string(data: bytes, pos: int) -> Tuple[bytes, int]:
    if pos + 4 > len(data):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", data[pos:pos + 4])
    if pos + 4 + n > len(data):
        raise ValueError("truncated")
    return data[pos + 4:pos + 4 + n], pos + 4 + n


def _check_sk(key_type: str, blob: bytes) -> int:
    """The fields of a security-key blob (for a ``cryptography`` that cannot parse them)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    _, pos = _read_string(blob, 0)
    if key_type == "sk-ssh-ed25519@openssh.com":
        pub, pos = _read_string(blob, pos)
        if len(pub) != 32:
            raise ValueError("bad ed25519 point")
        bits = 256
    else:
        curve, pos = _read_string(blob, pos)
        point, pos = _read_string(blob, pos)
        if curve != b"nistp256":
            raise ValueError("bad curve")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        bits = 256
    application, pos = _read_string(blob, pos)
    if pos != len(blob) or not application.startswith(b"ssh:"):
        raise ValueError("bad application")
    return bits


def _key_bits(key_type: str, b64: str, blob: bytes) -> int:
    """Parse the key with ``cryptography``; its size in bits. :raises ValueError: if broken."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_ssh_public_key(("%s %s" % (key_type, b64)).encode("ascii"))
    except UnsupportedAlgorithm:
        if key_type in SK_TYPES:
            return _check_sk(key_type, blob)
        raise ValueError("unsupported") from None
    if key_type in SK_TYPES:
        _check_sk(key_type, blob)  # the application string too
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    raise ValueError("unexpected key class")


def _bad_comment(comment: str) -> Optional[str]:
    if len(comment) > MAX_COMMENT:
        return "the key's comment is %d characters long: at most %d" % (len(comment),
                                                                          MAX_COMMENT)
    for ch in comment:
        # Cc: C0/C1 controls and DEL; Cf: invisible format characters (bidi overrides);
        # Zl/Zp: line and paragraph separators
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return "the key's comment holds a control character (U+%04X): use plain text" \
                % ord(ch)
    return None


def parse(text: str) -> PublicKey:
    """Validate one pasted OpenSSH public key line and normalise it.

    :raises PrivateKeyPasted: the paste holds a private key.
    :raises InvalidKey: anything else wrong, in one line that does not repeat the paste.
    """
    if not isinstance(text, str):
        raise InvalidKey("the key must be text")
    if _PRIVATE.search(text):
        raise PrivateKeyPasted()
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PASTE:
        raise InvalidKey("the paste is %d bytes: one public key line is at most %d bytes"
                         % (size, MAX_PASTE))
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InvalidKey("paste an OpenSSH public key: one line 'type base64 comment', as in "
                         "~/.ssh/id_ed25519.pub (%s)" % MAKE_ONE)
    if lines[0].startswith("---- BEGIN SSH2 PUBLIC KEY") or lines[0].startswith(
            "-----BEGIN SSH2 PUBLIC KEY"):
        raise InvalidKey("this is an RFC 4716 (SSH2) public key: convert it with "
                         "'ssh-keygen -i -f FILE' and paste the line that prints")
    if lines[0].startswith("-----BEGIN"):
        raise InvalidKey("this is a PEM file, not an OpenSSH public key line: paste the .pub "
                         "file (ssh-keygen -y -f KEYFILE prints it)")
    keys = sum(len(_KEY_START.findall(ln)) for ln in lines)
    if len(lines) > 1 or keys > 1:
        raise InvalidKey("paste one key at a time, on one line (this paste has %d %s)"
                         % (max(len(lines), keys), "lines" if len(lines) > 1 else "keys"))
    parts = lines[0].split()
    key_type = parts[0]
    if key_type == "ssh-dss":
        raise InvalidKey("ssh-dss (DSA) keys are refused: OpenSSH disabled them long ago; "
                         + MAKE_ONE)
    if key_type not in TYPES:
        if _TOKEN.match(key_type) and "-cert-" in key_type:
            raise InvalidKey("SSH certificates are not accepted: paste the plain public key")
        raise InvalidKey("not an OpenSSH public key: a key line starts with its type (%s)"
                         % ACCEPTED)
    if len(parts) < 2:
        raise InvalidKey("the %s key has no base64 part: copy the whole line of the .pub file"
                         % key_type)
    b64 = parts[1]
    try:
        if not _B64.match(b64):
            raise ValueError("not base64")
        blob = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidKey("the %s key's base64 part is damaged: copy the whole line of the "
                         ".pub file" % key_type) from None
    try:
        embedded, _ = _read_string(blob, 0)
    except ValueError:
        embedded = b""
    if embedded != key_type.encode("ascii"):
        raise InvalidKey("the key data is not a %s key (the line's type and its data differ)"
                         % key_type)
    try:
        bits = _key_bits(key_type, b64, blob)
    except ValueError:
        raise InvalidKey("the %s key's data is not a valid key: copy the whole line of the "
                         ".pub file" % key_type) from None
    if key_type == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise InvalidKey("this RSA key has %d bits: at least %d are needed; %s"
                         % (bits, MIN_RSA_BITS, MAKE_ONE))
    comment = " ".join(parts[2:])
    bad = _bad_comment(comment)
    if bad:
        raise InvalidKey(bad)
    # OpenSSH's own spelling of the blob (padding and all)
    canonical = base64.b64encode(blob).decode("ascii")
    return PublicKey(key_type, canonical, comment, bits, fingerprint(blob))


def normalize(text: str) -> str:
    """The normalised ``type base64 comment`` line of a pasted key (see :func:`parse`)."""
    return parse(text).line


def cluster_keypair(comment: str) -> Tuple[str, str]:
    """A fresh ed25519 pair for one cluster: ``(private OpenSSH text, public line)``; the
    private key has no passphrase (it lives on the gateway as root's ``~/.ssh/id_ed25519``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    comment = (comment or "").strip()
    bad = _bad_comment(comment)
    if bad or any(ch.isspace() and ch != " " for ch in comment):
        raise ValueError(bad or "bad comment")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    if not private.endswith("\n"):
        private += "\n"
    return private, (public + " " + comment) if comment else public


def known_types() -> List[str]:
    return list(TYPES)
