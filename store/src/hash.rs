//! Password hashing (argon2id, PHC strings) and the randomness for salts and resume tokens.

use crate::error::StoreError;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use breeze_core::rng::SplitMix64;
use std::sync::{Mutex, PoisonError};

const SALT_LEN: usize = 16;

/// Argon2id cost. Stored hashes carry their own cost, so changing it affects new hashes only
/// (and old ones as their owners log in: see `Hasher::needs_rehash`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    /// The OWASP recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashCost {
    /// The smallest cost argon2 accepts. Only for tests and simulations: a hash this cheap
    /// protects no password.
    pub const fn fast_for_tests() -> Self {
        HashCost {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }
}

enum Entropy {
    Os,
    Seeded(Mutex<SplitMix64>),
}

/// Hashes and verifies passwords, and draws salts and resume tokens.
///
/// Not `Clone` on purpose: a cloned seeded generator would hand out the same tokens twice.
/// Share it behind an `Arc`.
pub struct Hasher {
    argon2: Argon2<'static>,
    cost: HashCost,
    /// Verified against when the user does not exist, so that a login for an unknown name
    /// costs as much as one with a wrong password and does not reveal which names exist.
    dummy_hash: String,
    entropy: Entropy,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("cost", &self.cost)
            .field(
                "entropy",
                &match self.entropy {
                    Entropy::Os => "os",
                    Entropy::Seeded(_) => "seeded",
                },
            )
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher drawing salts and tokens from the operating system. Computes one hash up
    /// front (the dummy for unknown users), so it takes as long as one login.
    pub fn new(cost: HashCost) -> Result<Hasher, StoreError> {
        Hasher::with_entropy(cost, Entropy::Os)
    }

    /// A hasher whose salts and resume tokens come from a seeded generator, so that a
    /// simulation replays byte for byte. Only for tests and simulations: anyone who knows the
    /// seed can forge every resume token.
    pub fn seeded_for_simulation(cost: HashCost, seed: u64) -> Result<Hasher, StoreError> {
        Hasher::with_entropy(cost, Entropy::Seeded(Mutex::new(SplitMix64::new(seed))))
    }

    fn with_entropy(cost: HashCost, entropy: Entropy) -> Result<Hasher, StoreError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(StoreError::HashCost)?;
        let mut hasher = Hasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            cost,
            dummy_hash: String::new(),
            entropy,
        };
        let mut secret = [0u8; 16];
        hasher.fill_random(&mut secret)?;
        hasher.dummy_hash = hasher.hash_bytes(&secret)?;
        Ok(hasher)
    }

    pub fn cost(&self) -> HashCost {
        self.cost
    }

    /// Hashes `password` with a fresh salt into a PHC string (`$argon2id$v=19$m=…`).
    pub fn hash_password(&self, password: &str) -> Result<String, StoreError> {
        self.hash_bytes(password.as_bytes())
    }

    fn hash_bytes(&self, password: &[u8]) -> Result<String, StoreError> {
        let mut salt = [0u8; SALT_LEN];
        self.fill_random(&mut salt)?;
        let hash = self
            .argon2
            .hash_password_with_salt(password, &salt)
            .map_err(StoreError::Hash)?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches the PHC string `hash`. `Err` only for a hash that cannot be
    /// parsed or computed, never for a wrong password.
    pub fn verify_password(&self, password: &str, hash: &str) -> Result<bool, StoreError> {
        match self.argon2.verify_password(password.as_bytes(), hash) {
            Ok(()) => Ok(true),
            Err(password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(StoreError::Hash(e)),
        }
    }

    /// Verifies against `stored`, or against the dummy hash when there is no such user, so
    /// both cases take equally long. `Some(stored)` when the password matched.
    pub(crate) fn verify_stored(
        &self,
        password: &str,
        stored: Option<String>,
    ) -> Result<Option<String>, StoreError> {
        match stored {
            Some(stored) => Ok(self.verify_password(password, &stored)?.then_some(stored)),
            None => {
                // The verdict is known; only the time spent matters.
                let _ = self.verify_password(password, &self.dummy_hash)?;
                Ok(None)
            }
        }
    }

    /// Whether `hash` was made with other settings than this hasher's, so that it should be
    /// replaced while the password is at hand.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        parsed.algorithm.as_str() != "argon2id"
            || parsed.version != Some(Version::V0x13 as u32)
            || params.m_cost() != self.cost.memory_kib
            || params.t_cost() != self.cost.iterations
            || params.p_cost() != self.cost.parallelism
    }

    pub fn fill_random(&self, buf: &mut [u8]) -> Result<(), StoreError> {
        match &self.entropy {
            Entropy::Os => getrandom::fill(buf).map_err(StoreError::Entropy),
            Entropy::Seeded(rng) => {
                // The generator's state stays consistent even if a holder panicked.
                let mut rng = rng.lock().unwrap_or_else(PoisonError::into_inner);
                for chunk in buf.chunks_mut(8) {
                    let word = rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&word[..chunk.len()]);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_cost() {
        let hasher = Hasher::new(HashCost::fast_for_tests()).expect("hasher");
        let hash = hasher.hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        assert!(
            hasher
                .verify_password("correct horse", &hash)
                .expect("verify")
        );
        assert!(
            !hasher
                .verify_password("wrong horse", &hash)
                .expect("verify")
        );
        assert!(!hasher.needs_rehash(&hash));
        let stronger = Hasher::new(HashCost {
            memory_kib: 16,
            ..HashCost::fast_for_tests()
        })
        .expect("hasher");
        assert!(stronger.needs_rehash(&hash));
        assert!(
            stronger
                .verify_password("correct horse", &hash)
                .expect("verify")
        );
    }

    #[test]
    fn salts_differ_and_garbage_is_an_error() {
        let hasher = Hasher::new(HashCost::fast_for_tests()).expect("hasher");
        let a = hasher.hash_password("pw").expect("hash");
        let b = hasher.hash_password("pw").expect("hash");
        assert_ne!(a, b);
        assert!(hasher.verify_password("pw", "not a phc string").is_err());
    }

    #[test]
    fn seeded_hashers_repeat_themselves() {
        let a = Hasher::seeded_for_simulation(HashCost::fast_for_tests(), 7).expect("hasher");
        let b = Hasher::seeded_for_simulation(HashCost::fast_for_tests(), 7).expect("hasher");
        assert_eq!(
            a.hash_password("pw").expect("a"),
            b.hash_password("pw").expect("b")
        );
    }

    #[test]
    fn invalid_cost_is_refused() {
        let cost = HashCost {
            memory_kib: 1,
            ..HashCost::fast_for_tests()
        };
        assert!(matches!(Hasher::new(cost), Err(StoreError::HashCost(_))));
    }
}
