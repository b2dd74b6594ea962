"""Sign archives in the OpenSSF model signing format (`model-signing`), with a local EC
key; the signature lands beside the archive as NAME.mar.sig (core.signatures reads it).

    python -m modelbuild.signing new-key run/model-signing   # once: signing-key.pem, trusted-keys.pem
    python -m modelbuild.signing sign --key run/model-signing/signing-key.pem model_store/*.mar

MODEL_SIGNING_KEY names the key `make archive` and modelbuild.archive sign with.
"""

import argparse
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import signing

from core.signatures import SIGNATURE_SUFFIX

PRIVATE_KEY = "signing-key.pem"
TRUSTED_KEYS = "trusted-keys.pem"


def new_key(directory: Path) -> Path:
    """An EC P-256 key in `directory` (kept if there is one): the private key, readable
    by its owner only, and its public key as a trusted keys file. The private key's path."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / PRIVATE_KEY
    if not private.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        (directory / TRUSTED_KEYS).write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private


def sign(archive: Path, key: Path) -> Path:
    """Sign the archive with the private key; the signature's path (beside it)."""
    signature = archive.with_name(archive.name + SIGNATURE_SUFFIX)
    signing.Config().use_elliptic_key_signer(private_key=key).sign(archive, signature)
    return signature


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("new-key", help="make a signing key (kept if there is one)").add_argument(
        "directory", type=Path)
    signer = sub.add_parser("sign", help="sign archives: NAME.mar.sig beside each")
    signer.add_argument("--key", type=Path, default=os.environ.get("MODEL_SIGNING_KEY"),
                        required="MODEL_SIGNING_KEY" not in os.environ)
    signer.add_argument("archives", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "new-key":
        print(new_key(args.directory))
        return 0
    for archive in args.archives:
        print(sign(archive, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
