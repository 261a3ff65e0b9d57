//! How far the sender of a decrypted event is trusted, for handlers
//! ([`trestle::encryption::SenderTrust`]), and refusing devices that are not cross-signed
//! ([`crate::Settings::accept_unsigned_devices`]).

use matrix_sdk_common::deserialized_responses::{VerificationLevel, VerificationState};
use matrix_sdk_crypto::TrustRequirement;
use trestle::encryption::SenderTrust;

/// The framework's word for matrix-sdk-crypto's verification state of a decrypted event.
pub(crate) fn sender_trust(state: &VerificationState) -> SenderTrust {
    match state {
        VerificationState::Verified => SenderTrust::Verified,
        // Still signed by its owner's current identity; only the bot's verification of the
        // identity is out of date.
        VerificationState::Unverified(
            VerificationLevel::UnverifiedIdentity | VerificationLevel::VerificationViolation,
        ) => SenderTrust::CrossSigned,
        VerificationState::Unverified(VerificationLevel::UnsignedDevice) => {
            SenderTrust::NotCrossSigned
        }
        VerificationState::Unverified(_) => SenderTrust::Unknown,
    }
}

/// What decryption requires of the sender's device. Refusing only unsigned devices, not
/// unverified identities, is what MSC4153 asks of clients (Element's "exclude insecure
/// devices").
pub(crate) fn requirement(accept_unsigned_devices: bool) -> TrustRequirement {
    if accept_unsigned_devices {
        TrustRequirement::Untrusted
    } else {
        TrustRequirement::CrossSigned
    }
}

#[cfg(test)]
mod tests {
    use matrix_sdk_common::deserialized_responses::DeviceLinkProblem;

    use super::*;

    #[test]
    fn verification_states_map_to_trust() {
        let unverified = |level| sender_trust(&VerificationState::Unverified(level));
        assert_eq!(
            sender_trust(&VerificationState::Verified),
            SenderTrust::Verified
        );
        assert_eq!(
            unverified(VerificationLevel::UnverifiedIdentity),
            SenderTrust::CrossSigned
        );
        assert_eq!(
            unverified(VerificationLevel::UnsignedDevice),
            SenderTrust::NotCrossSigned
        );
        assert_eq!(
            unverified(VerificationLevel::None(DeviceLinkProblem::MissingDevice)),
            SenderTrust::Unknown
        );
        assert!(SenderTrust::Unknown < SenderTrust::NotCrossSigned);
        assert!(SenderTrust::CrossSigned < SenderTrust::Verified);
    }
}
