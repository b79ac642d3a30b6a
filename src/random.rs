//! Randomness from the operating system: certificate serials, station
//! nonces, request ids and simulated GUIDs all come from here.

/// `N` random bytes from the operating system.
///
/// Without OS randomness the station would issue guessable serials and
/// nonces, so it stops instead: on Linux this happens only if the kernel's
/// random source is unavailable, which no normal system allows.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        eprintln!(
            "station: the operating system gave no randomness; stopping rather than issuing guessable serials"
        );
        std::process::abort();
    }
    b
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_differ() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
    }
}
