//! A self-signed TLS certificate for a federating Synapse's listener, made with the
//! `cryptography` package of Synapse's own virtualenv (Synapse depends on it), so the harness
//! needs nothing else installed.

use std::path::{Path, PathBuf};

/// Writes `tls.crt` and `tls.key` into `dir`: a certificate for `localhost` and `127.0.0.1`,
/// valid for two days. Its peers do not check it (`federation_verify_certificates: false`), but
/// Synapse will not open a TLS listener without one.
pub(crate) async fn self_signed(python: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    const SCRIPT: &str = r#"
import datetime, ipaddress
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
certificate = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days=2))
    .add_extension(
        x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ),
        critical=False,
    )
    .sign(key, hashes.SHA256())
)
with open("tls.key", "wb") as f:
    f.write(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
with open("tls.crt", "wb") as f:
    f.write(certificate.public_bytes(serialization.Encoding.PEM))
"#;
    let output = tokio::process::Command::new(python)
        .args(["-c", SCRIPT])
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {} to make a certificate: {e}", python.display()));
    assert!(
        output.status.success(),
        "making a self-signed certificate failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (dir.join("tls.crt"), dir.join("tls.key"))
}
