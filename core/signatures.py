"""Archive signatures in the OpenSSF model signing format (`model-signing`): a Sigstore
bundle whose DSSE envelope signs an in-toto statement of the archive's sha256.

The gateway checks one at push and register, each model agent again before its
TorchServe sees the archive, each against its own trusted keys: a file of PEM blocks,
public keys (a key file's, a KMS's or a PKCS#11 token's) and/or CA certificates (for
archives signed with a certificate chain). Several keys let a signing key rotate
without a gap.
"""

import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from model_signing import verifying

from core.errors import ApiError
from core.settings import Settings

PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)
SIGNATURE_SUFFIX = ".sig"  # a signature's file beside its archive: NAME.mar.sig
MAX_SIGNATURE_BYTES = 64 * 1024
log = logging.getLogger(__name__)


class SignatureError(ApiError):
    """Unsigned, not signed by a trusted key, or not this archive's signature."""

    def __init__(self, detail: str):
        super().__init__(422, f"archive signature: {detail}")


def key_id(public_key) -> str:
    """A public key's short name: the sha256 of its SubjectPublicKeyInfo, 16 hex digits."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKeys:
    """The PEM blocks of a trusted keys file, each a public key or a CA certificate."""

    keys: dict  # key id -> PEM bytes
    certificates: tuple[bytes, ...]

    @classmethod
    def read(cls, path: str) -> "TrustedKeys":
        """The file's keys; ValueError naming what is not a PEM public key or certificate."""
        keys, certificates = {}, []
        for block in PEM_BLOCK.finditer(Path(path).read_bytes()):
            pem, kind = block.group(0), block.group(1).decode()
            if kind == "PUBLIC KEY":
                keys[key_id(serialization.load_pem_public_key(pem))] = pem
            elif kind == "CERTIFICATE":
                x509.load_pem_x509_certificate(pem)
                certificates.append(pem)
            else:
                raise ValueError(f"{path}: a {kind} block; trusted keys are PUBLIC KEY or "
                                 "CERTIFICATE blocks (never a private key)")
        if not keys and not certificates:
            raise ValueError(f"{path} holds no PEM public key or certificate")
        return cls(keys, tuple(certificates))


class ArchiveSignatures:
    """The rule an archive passes before it is declared or loaded. The trusted keys file
    is read again whenever it changes: a rotation needs no restart."""

    def __init__(self, keys_file: str, allow_unsigned: bool):
        self.keys_file, self.allow_unsigned = keys_file, allow_unsigned
        self._read: tuple[int, TrustedKeys] | None = None  # (the file's mtime, its keys)
        if keys_file:
            self.trusted()  # a file that is not one fails the start

    @classmethod
    def from_settings(cls, settings: Settings) -> "ArchiveSignatures":
        if settings.allow_unsigned_archives:
            log.warning("ALLOW_UNSIGNED_ARCHIVES=true: archives without a signature are "
                        "declared and served. For local experiments only: an archive is "
                        "code that runs inside TorchServe")
        elif not settings.model_trusted_keys_file:
            log.warning("no MODEL_TRUSTED_KEYS_FILE: every archive but the image's seeds "
                        "is refused")
        return cls(settings.model_trusted_keys_file, settings.allow_unsigned_archives)

    def trusted(self) -> TrustedKeys | None:
        """The trusted keys file's keys, as it is now (None without one)."""
        if not self.keys_file:
            return None
        mtime = Path(self.keys_file).stat().st_mtime_ns
        if self._read is None or self._read[0] != mtime:
            self._read = (mtime, TrustedKeys.read(self.keys_file))
        return self._read[1]

    def unsigned(self) -> str:
        """How an archive without a signature is trusted, or SignatureError."""
        if self.allow_unsigned:
            return "unsigned (ALLOW_UNSIGNED_ARCHIVES)"
        raise SignatureError(f"unsigned: push it with its signature ({SIGNATURE_SUFFIX} "
                             "file; make archive signs what it builds)")

    def check(self, archive: Path, signature: str | None) -> str:
        """How `archive` is trusted ("signed by key <id>", or unsigned where that is
        allowed); SignatureError saying why not."""
        if not signature:
            return self.unsigned()
        try:
            trusted = self.trusted()
        except (OSError, ValueError) as exc:
            raise SignatureError(f"the trusted keys file cannot be read: {exc}") from None
        if trusted is None:
            raise SignatureError("no trusted keys (MODEL_TRUSTED_KEYS_FILE) to verify it with")
        with tempfile.TemporaryDirectory() as work:
            bundle = Path(work) / "archive.sig"
            bundle.write_text(signature)
            refusals = []
            for kid, pem in trusted.keys.items():
                key = Path(work) / f"{kid}.pem"
                key.write_bytes(pem)
                why = _verify(verifying.Config().use_elliptic_key_verifier(public_key=key),
                              archive, bundle)
                if why is None:
                    return f"signed by key {kid}"
                refusals.append(why)
            if trusted.certificates:
                chain = [Path(work) / f"ca{i}.pem" for i in range(len(trusted.certificates))]
                for path, pem in zip(chain, trusted.certificates):
                    path.write_bytes(pem)
                why = _verify(verifying.Config().use_certificate_verifier(
                    certificate_chain=chain), archive, bundle)
                if why is None:
                    return "signed by a certificate of the trusted chain"
                refusals.append(why)
        if any(why.startswith("Signature mismatch") for why in refusals):
            raise SignatureError("the archive's bytes are not the ones signed")
        raise SignatureError(f"not signed by a trusted key ({refusals[0][:200]})")


def signature_beside(archive: Path) -> str | None:
    """The signature file next to an archive (NAME.mar.sig), if there is one."""
    path = archive.with_name(archive.name + SIGNATURE_SUFFIX)
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{path.name} is over {MAX_SIGNATURE_BYTES} bytes")
    return path.read_text(errors="replace")


def _verify(config, archive: Path, bundle: Path) -> str | None:
    """None when model-signing verifies the bundle over the archive; else why not."""
    try:
        config.verify(archive, bundle)
    except Exception as exc:  # noqa: BLE001 - a malformed bundle raises many kinds
        return str(exc) or type(exc).__name__
    return None
