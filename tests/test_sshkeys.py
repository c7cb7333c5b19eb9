"""SSH public key validation: every accepted type (keys made with cryptography), and every
refusal with its message — private keys in any form, garbage, too much, the wrong type — which
never repeats the paste and stores nothing."""

import base64
import os
import shutil
import struct
import subprocess
import warnings

import pytest

from conftest import NOW, count_rows
from vc import keys, sshkeys
from vc.errors import VcError
from vc.sshkeys import InvalidKey, PrivateKeyPasted

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa


def _pub_line(key, comment="alice@laptop"):
    line = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    return line + (" " + comment if comment else "")


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


@pytest.fixture(scope="module")
def made():
    """One key of each kind, made once for the module."""
    k = {"ed25519": ed25519.Ed25519PrivateKey.generate(),
         "p256": ec.generate_private_key(ec.SECP256R1()),
         "p384": ec.generate_private_key(ec.SECP384R1()),
         "p521": ec.generate_private_key(ec.SECP521R1()),
         "rsa2048": rsa.generate_private_key(65537, 2048),
         "rsa1024": rsa.generate_private_key(65537, 1024)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k["dsa"] = dsa.generate_private_key(1024)
    return k


def sk_ed25519(comment="yubikey"):
    blob = (_string(b"sk-ssh-ed25519@openssh.com") + _string(os.urandom(32))
            + _string(b"ssh:"))
    return "sk-ssh-ed25519@openssh.com %s %s" % (base64.b64encode(blob).decode(), comment)


def sk_ecdsa(comment="yubikey"):
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    blob = (_string(b"sk-ecdsa-sha2-nistp256@openssh.com") + _string(b"nistp256")
            + _string(point) + _string(b"ssh:"))
    return "sk-ecdsa-sha2-nistp256@openssh.com %s %s" % (base64.b64encode(blob).decode(), comment)


# ---------------------------------------------------------------------------- accepted
@pytest.mark.parametrize("kind, key_type, bits", [
    ("ed25519", "ssh-ed25519", 256),
    ("p256", "ecdsa-sha2-nistp256", 256),
    ("p384", "ecdsa-sha2-nistp384", 384),
    ("p521", "ecdsa-sha2-nistp521", 521),
    ("rsa2048", "ssh-rsa", 2048),
])
def test_good_keys_of_each_type(made, kind, key_type, bits):
    line = _pub_line(made[kind])
    k = sshkeys.parse(line)
    assert (k.key_type, k.bits, k.comment) == (key_type, bits, "alice@laptop")
    assert k.line == line
    blob = base64.b64decode(line.split()[1])
    assert k.fingerprint == sshkeys.fingerprint(blob)
    assert k.fingerprint.startswith("SHA256:") and not k.fingerprint.endswith("=")
    assert len(k.fingerprint) == len("SHA256:") + 43


@pytest.mark.parametrize("make, key_type", [(sk_ed25519, "sk-ssh-ed25519@openssh.com"),
                                            (sk_ecdsa, "sk-ecdsa-sha2-nistp256@openssh.com")])
def test_security_keys_accepted(make, key_type):
    line = make()
    k = sshkeys.parse(line)
    assert k.key_type == key_type and k.line == line and k.bits == 256


def test_security_key_fallback_check_without_cryptography_support(monkeypatch):
    """An older cryptography cannot parse sk-* keys: the blob's fields are checked here."""
    from cryptography.exceptions import UnsupportedAlgorithm

    def refuse(data, *a, **kw):
        raise UnsupportedAlgorithm("no sk keys")

    monkeypatch.setattr(ser, "load_ssh_public_key", refuse)
    assert sshkeys.parse(sk_ed25519()).key_type == "sk-ssh-ed25519@openssh.com"
    assert sshkeys.parse(sk_ecdsa()).key_type == "sk-ecdsa-sha2-nistp256@openssh.com"
    bad = (_string(b"sk-ssh-ed25519@openssh.com") + _string(os.urandom(31)) + _string(b"ssh:"))
    with pytest.raises(InvalidKey, match="not a valid key"):
        sshkeys.parse("sk-ssh-ed25519@openssh.com " + base64.b64encode(bad).decode())
    bad = (_string(b"sk-ssh-ed25519@openssh.com") + _string(os.urandom(32)) + _string(b"web"))
    with pytest.raises(InvalidKey, match="not a valid key"):
        sshkeys.parse("sk-ssh-ed25519@openssh.com " + base64.b64encode(bad).decode())


def test_normalized(made):
    line = _pub_line(made["ed25519"], comment="")
    t, b64 = line.split()
    assert sshkeys.normalize("  %s\t%s   my  laptop \r\n\r\n" % (t, b64)) == \
        "%s %s my laptop" % (t, b64)
    assert sshkeys.normalize(line) == line  # no comment: two fields
    assert sshkeys.parse("# my key\n" + line).line == line
    # the base64 as OpenSSH writes it (padding restored)
    rsa_line = _pub_line(made["rsa2048"], comment="")
    assert sshkeys.parse(rsa_line).blob == rsa_line.split()[1]
    assert sshkeys.parse(line + " café ü").comment == "café ü"


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="no ssh-keygen")
def test_fingerprint_matches_ssh_keygen(made, tmp_path):
    from vc.web import sshkey

    for kind in ("ed25519", "p384", "rsa2048"):
        line = _pub_line(made[kind])
        p = tmp_path / ("%s.pub" % kind)
        p.write_text(line + "\n")
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(p)],
                             capture_output=True, text=True, check=True).stdout.split()
        assert sshkeys.parse(line).fingerprint == out[1] == sshkey.fingerprint(line)


# ---------------------------------------------------------------------------- refused
def _private_cases(made):
    ed, r = made["ed25519"], made["rsa2048"]
    openssh = ed.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                               ser.NoEncryption()).decode()
    body = "".join(openssh.strip().splitlines()[1:-1])
    return {
        "pem-pkcs8": r.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                     ser.NoEncryption()).decode(),
        "pem-rsa": r.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL,
                                   ser.NoEncryption()).decode(),
        "pem-ec": made["p256"].private_bytes(ser.Encoding.PEM,
                                             ser.PrivateFormat.TraditionalOpenSSL,
                                             ser.NoEncryption()).decode(),
        "pem-encrypted": r.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                         ser.BestAvailableEncryption(b"pw")).decode(),
        "openssh": openssh,
        "openssh-after-public": _pub_line(ed) + "\n" + openssh,
        "openssh-bare-blob": body,
        "putty": ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"
                  "Comment: alice@laptop\nPublic-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIB8f\n"
                  "Hx8fHx8fHx8f\nPrivate-Lines: 1\nAAAAIHNlY3JldHNlY3JldHNlY3JldA==\n"
                  "Private-MAC: 0123456789abcdef\n"),
    }


def _refusals(made):
    """(case, paste, message fragment)"""
    ed_line = _pub_line(made["ed25519"])
    t, b64, _ = ed_line.split()
    rsa_b64 = _pub_line(made["rsa2048"]).split()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dss = _pub_line(made["dsa"])
    cases = [(name, text, "this is a PRIVATE key") for name, text in _private_cases(made).items()]
    cases += [
        ("empty", "  \n\r\n", "paste an OpenSSH public key"),
        ("garbage", "hello world this is not a key", "not an OpenSSH public key"),
        ("password-like", "hunter2-correct-horse", "not an OpenSSH public key"),
        ("authorized-keys-options", 'from="10.0.0.1" ' + ed_line, "not an OpenSSH public key"),
        ("one-megabyte", "ssh-ed25519 " + "A" * (1024 * 1024), "at most 16384 bytes"),
        ("just-over-16k", ed_line + " " + "x" * (16 * 1024), "at most 16384 bytes"),
        ("unknown-type", "ssh-foo " + b64 + " x", "not an OpenSSH public key"),
        ("certificate", "ssh-ed25519-cert-v01@openssh.com " + b64, "certificates are not"),
        ("dss", dss, "ssh-dss (DSA) keys are refused"),
        ("short-rsa", _pub_line(made["rsa1024"]), "this RSA key has 1024 bits: at least 2048"),
        ("two-lines", ed_line + "\n" + _pub_line(made["p256"]), "one key at a time"),
        ("two-on-one-line", ed_line + " " + _pub_line(made["p256"]), "one key at a time"),
        ("no-base64", "ssh-ed25519", "has no base64 part"),
        ("bad-base64", "ssh-ed25519 AAAA$$$$notbase64 x", "base64 part is damaged"),
        ("bad-padding", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5A x", "base64 part is damaged"),
        ("truncated", "%s %s x" % (t, b64[:40]), "not a valid key"),
        ("type-mismatch", "ssh-rsa %s x" % b64, "the line's type and its data differ"),
        ("type-mismatch-2", "ssh-ed25519 %s x" % rsa_b64, "the line's type and its data differ"),
        ("control-bell", ed_line + "\x07", "control character (U+0007)"),
        ("control-escape", "%s %s evil\x1b[2Jcomment" % (t, b64), "control character (U+001B)"),
        ("bidi-override", "%s %s \u202egnp.exe" % (t, b64), "control character (U+202E)"),
        ("long-comment", "%s %s %s" % (t, b64, "c" * 201), "201 characters long: at most 200"),
        ("rfc4716", "---- BEGIN SSH2 PUBLIC KEY ----\nComment: x\n" + b64
         + "\n---- END SSH2 PUBLIC KEY ----", "RFC 4716"),
        ("pem-public", made["ed25519"].public_key().public_bytes(
            ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode(), "PEM file"),
    ]
    return cases


CASE_NAMES = ["pem-pkcs8", "pem-rsa", "pem-ec", "pem-encrypted", "openssh",
              "openssh-after-public", "openssh-bare-blob", "putty", "empty", "garbage",
              "password-like", "authorized-keys-options", "one-megabyte", "just-over-16k",
              "unknown-type", "certificate", "dss", "short-rsa", "two-lines", "two-on-one-line",
              "no-base64", "bad-base64", "bad-padding", "truncated", "type-mismatch",
              "type-mismatch-2", "control-bell", "control-escape", "bidi-override",
              "long-comment", "rfc4716", "pem-public"]


def test_case_table_is_complete(made):
    assert [c[0] for c in _refusals(made)] == CASE_NAMES


def _no_echo(msg, paste):
    """No piece of the paste (other than a key type name) is in the message."""
    assert "\n" not in msg
    for tok in paste.split():
        if len(tok) >= 6 and tok not in sshkeys.TYPES and tok not in ("ssh-dss", "PRIVATE",
                                                                       "SSH2", "PUBLIC"):
            assert tok not in msg, (tok, msg)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_refused_with_its_message(made, case):
    _, paste, needle = {c[0]: c for c in _refusals(made)}[case]
    with pytest.raises(InvalidKey) as e:
        sshkeys.parse(paste)
    msg = str(e.value)
    assert needle in msg
    assert isinstance(e.value, VcError)
    assert isinstance(e.value, PrivateKeyPasted) == (needle == "this is a PRIVATE key")
    _no_echo(msg, paste)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_refused_keys_store_nothing(db, made, case):
    _, paste, needle = {c[0]: c for c in _refusals(made)}[case]
    before = count_rows(db)
    with pytest.raises(InvalidKey) as e:
        keys.add(db, "alice", paste, now=NOW)
    assert needle in str(e.value)
    assert count_rows(db) == before and before["vcsshkey"] == 0


def test_not_text_refused():
    with pytest.raises(InvalidKey, match="must be text"):
        sshkeys.parse(b"ssh-ed25519 AAAA")


# ---------------------------------------------------------------------------- cluster pair
def test_cluster_keypair_is_a_fresh_ed25519_pair(tmp_path):
    private, public = sshkeys.cluster_keypair("vc-rack-7")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert private.endswith("-----END OPENSSH PRIVATE KEY-----\n")
    key = ser.load_ssh_private_key(private.encode(), password=None)  # no passphrase
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    parsed = sshkeys.parse(public)
    assert parsed.key_type == "ssh-ed25519" and parsed.comment == "vc-rack-7"
    assert _pub_line(key, "vc-rack-7") == public
    assert sshkeys.cluster_keypair("vc-rack-7") != (private, public)
    assert len(sshkeys.cluster_keypair("")[1].split()) == 2
    for bad in ("a\nb", "x" * 201, "bell\x07"):
        with pytest.raises(ValueError):
            sshkeys.cluster_keypair(bad)
    if shutil.which("ssh-keygen"):
        p = tmp_path / "id_ed25519"
        p.write_text(private)
        p.chmod(0o600)
        out = subprocess.run(["ssh-keygen", "-y", "-f", str(p)], capture_output=True,
                             text=True, check=True).stdout
        assert out.split()[:2] == public.split()[:2]
