//! HMAC-SHA256 signatures in the `X-Hub-Signature-256: sha256=<hex>` form GitHub made common.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header outbound deliveries carry and inbound webhooks with a secret require.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The signature header's value for `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (`sha256=<hex>`) signs `body` under `secret`, compared in constant time.
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn verifies_only_the_right_signature() {
        let sig = signature("k", b"body");
        assert!(verify("k", b"body", &sig));
        assert!(!verify("k", b"body!", &sig));
        assert!(!verify("other", b"body", &sig));
        assert!(!verify("k", b"body", "sha256=zz"));
        assert!(!verify("k", b"body", sig.trim_start_matches("sha256=")));
    }
}
