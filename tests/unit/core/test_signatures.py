"""Archive signatures without a server (core/signatures.py): real model-signing bundles
over a file, by an EC key or a certificate chain, checked against a trusted keys file
that rotates without a restart."""

import os
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from model_signing import signing

from core.signatures import ArchiveSignatures, SignatureError, signature_beside


def new_key(path):
    """An EC P-256 private key file; its public key's PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def signed(archive, key) -> str:
    bundle = archive.with_name(archive.name + ".sig")
    signing.Config().use_elliptic_key_signer(private_key=key).sign(archive, bundle)
    return bundle.read_text()


@pytest.fixture
def keys(tmp_path):
    """(old key, new key) files, and a trusted keys file holding the old one's public key."""
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(new_key(old))
    new_public = new_key(new)
    return old, new, trusted, new_public


def test_a_signed_archive_passes_and_every_other_is_refused_with_why(tmp_path, keys):
    old, new, trusted, _ = keys
    archive = tmp_path / "a.mar"
    archive.write_bytes(os.urandom(100_000))
    signature = signed(archive, old)
    rule = ArchiveSignatures(str(trusted), allow_unsigned=False)
    assert rule.check(archive, signature).startswith("signed by key ")
    assert signature_beside(archive) == signature

    changed = tmp_path / "b.mar"
    changed.write_bytes(archive.read_bytes()[:-1] + b"x")
    for path, bundle, why in [
            (changed, signature, "the archive's bytes are not the ones signed"),
            (archive, signed(changed, new), "not signed by a trusted key"),
            (archive, None, "unsigned"),
            (archive, "{not a bundle", "not signed by a trusted key"),
            (archive, '{"mediaType": "x"}', "not signed by a trusted key")]:
        with pytest.raises(SignatureError, match=why) as refused:
            rule.check(path, bundle)
        assert refused.value.status == 422
    assert ArchiveSignatures("", allow_unsigned=True).check(archive, None).startswith("unsigned")
    with pytest.raises(SignatureError, match="no trusted keys"):
        ArchiveSignatures("", allow_unsigned=True).check(archive, signature)


def test_a_rotation_takes_effect_without_a_restart(tmp_path, keys):
    old, new, trusted, new_public = keys
    archive = tmp_path / "a.mar"
    archive.write_bytes(os.urandom(10_000))
    by_old, by_new = signed(archive, old), signed(archive, new)
    rule = ArchiveSignatures(str(trusted), allow_unsigned=False)
    with pytest.raises(SignatureError):
        rule.check(archive, by_new)
    old_public = trusted.read_bytes()
    trusted.write_bytes(old_public + new_public)  # both, while archives are re-signed
    os.utime(trusted, ns=(1, 1))
    assert rule.check(archive, by_old) != rule.check(archive, by_new)
    trusted.write_bytes(new_public)  # the old one removed
    os.utime(trusted, ns=(2, 2))
    assert rule.check(archive, by_new).startswith("signed by key ")
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        rule.check(archive, by_old)
    trusted.write_text("garbage")
    os.utime(trusted, ns=(3, 3))
    with pytest.raises(SignatureError, match="trusted keys file cannot be read"):
        rule.check(archive, by_new)


def test_a_trusted_keys_file_holds_public_keys_only(tmp_path, keys):
    old, *_ = keys
    for text, why in [(old.read_text(), "never a private key"), ("", "holds no PEM")]:
        path = tmp_path / "bad.pem"
        path.write_text(text)
        with pytest.raises(ValueError, match=why):
            ArchiveSignatures(str(path), allow_unsigned=False)


def certificate(subject: str, key, issuer: str, issuer_key, ca: bool):
    """An X.509 certificate for `key`, by `issuer_key`: a CA's, or a code signer's."""
    now = datetime.now(timezone.utc)
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    usage.update(key_cert_sign=ca, crl_sign=ca, digital_signature=not ca)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(**usage), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_an_archive_signed_with_a_certificate_of_the_trusted_chain_passes(tmp_path):
    archive = tmp_path / "a.mar"
    archive.write_bytes(os.urandom(10_000))
    bundles = {}
    for ca_name in ("our-ca", "their-ca"):
        ca_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
            ec.SECP256R1())
        ca = certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
        files = {"ca": tmp_path / f"{ca_name}.pem", "cert": tmp_path / f"{ca_name}-signer.pem",
                 "key": tmp_path / f"{ca_name}-signer-key.pem"}
        files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        files["cert"].write_bytes(certificate("signer", signer_key, ca_name, ca_key, ca=False)
                                  .public_bytes(serialization.Encoding.PEM))
        files["key"].write_bytes(signer_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        bundle = tmp_path / f"{ca_name}.sig"
        signing.Config().use_certificate_signer(
            private_key=files["key"], signing_certificate=files["cert"],
            certificate_chain=[files["ca"]]).sign(archive, bundle)
        bundles[ca_name] = bundle.read_text()
    rule = ArchiveSignatures(str(tmp_path / "our-ca.pem"), allow_unsigned=False)
    assert rule.check(archive, bundles["our-ca"]) == "signed by a certificate of the trusted chain"
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        rule.check(archive, bundles["their-ca"])
