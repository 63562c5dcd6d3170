#!/usr/bin/env python3
"""Search the whole filesystem of the instance for the study CA private key.

argv: CA public key (PEM), CA key file name, CA key passphrase (test-only).
Any PEM private key found (plain, encrypted with the passphrase, or embedded in JSON with escaped
newlines, as in an Ansible module argument file) whose public key equals the CA's counts as a
leak, as does any file named like the CA key file. Prints one line per finding, or nothing.
"""
import os
import re
import sys

from cryptography.hazmat.primitives import serialization

CA_PUB = serialization.load_pem_public_key(sys.argv[1].encode())
CA_NAME = sys.argv[2]
PASS = sys.argv[3].encode()
PEM = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)
SKIP = ("/proc", "/sys", "/dev")
ca_numbers = CA_PUB.public_numbers()
scanned = 0


def same_key(block):
    for password in (None, PASS):
        try:
            key = serialization.load_pem_private_key(block, password=password)
        except TypeError:
            continue  # encrypted and no password given, or password given for a plain key
        except ValueError:
            return False  # not parseable, or wrong passphrase
        return key.public_key().public_numbers() == ca_numbers
    return False


for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]
    for name in files:
        path = os.path.join(root, name)
        if CA_NAME in name:
            print("NAME", path)
        try:
            if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > 50_000_000:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        scanned += 1
        if b"PRIVATE KEY-----" not in data:
            continue
        for match in PEM.finditer(data.replace(b"\\n", b"\n")):
            if same_key(match.group(0)):
                print("KEY", path)
print("scanned", scanned, file=sys.stderr)
