//! The secret keys every test configures its API and workers with, so tests can seal secrets
//! the way the binaries do and open what they stored.

use dispatch_domain::sealing::Keyring;

/// `secret_keys` for tests: `test` (active, seals) and `test-old` (opens only), as
/// `DISPATCH_SECRET_KEYS` would give them.
pub const TEST_SECRET_KEYS: &str = "test:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                                    test-old:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";

/// [`TEST_SECRET_KEYS`] as a keyring.
pub fn test_keyring() -> Keyring {
    Keyring::parse(TEST_SECRET_KEYS).expect("the test secret keys are valid")
}
