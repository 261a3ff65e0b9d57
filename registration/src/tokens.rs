use rand::{Rng, distr::Alphanumeric};

/// A 64-character alphanumeric token (about 381 bits) from the operating system's CSPRNG-seeded
/// thread generator: far past guessing, and safe to put in YAML and URLs unquoted.
pub fn generate_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}
