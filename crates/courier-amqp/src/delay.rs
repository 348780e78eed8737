//! The binary delay cascade: arbitrary retry delays in whole seconds without
//! broker plugins.
//!
//! Level `k` is a topic exchange and a queue whose messages all live exactly
//! 2^k seconds and then dead-letter into level `k - 1` (level 0 into the retry
//! exchange, which routes back to the provider's work queue). A message's
//! routing key spells its delay in binary, one word per level, most
//! significant first, followed by the provider: `0.0.1.0.1.stripe` waits
//! 4 s + 1 s. Each level's exchange sends it through its queue when its bit is
//! 1 and straight on when it is 0. Because every message in one queue has the
//! same TTL, expiry order is FIFO order and nothing waits behind a longer
//! delay. This is NServiceBus's "delay infrastructure" design.
//!
//! Owns the routing-key arithmetic; it must never decide how long to wait.

use courier_core::retry::MAX_DELAY_SECS;

/// Levels in the cascade: enough bits for [`MAX_DELAY_SECS`].
pub const LEVELS: u32 = u64::BITS - MAX_DELAY_SECS.leading_zeros();

/// The routing key for a delay of `secs` (clamped to the maximum) to `provider`.
pub fn routing_key(secs: u64, provider: &str) -> String {
    let secs = secs.min(MAX_DELAY_SECS);
    let mut key = String::with_capacity(2 * LEVELS as usize + provider.len());
    for level in (0..LEVELS).rev() {
        key.push(if secs >> level & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(provider);
    key
}

/// The level to publish a delay of `secs` into: its highest set bit, so the
/// message skips the levels above it.
pub fn entry_level(secs: u64) -> u32 {
    let secs = secs.min(MAX_DELAY_SECS);
    if secs == 0 {
        0
    } else {
        u64::BITS - 1 - secs.leading_zeros()
    }
}

/// Binding pattern on level `level`'s exchange matching keys whose bit
/// `level` is `bit`.
pub fn level_pattern(level: u32, bit: bool) -> String {
    let mut p = "*.".repeat((LEVELS - 1 - level) as usize);
    p.push(if bit { '1' } else { '0' });
    p.push_str(".#");
    p
}

/// How long a message waits in level `level`'s queue, in milliseconds.
pub fn level_ttl_ms(level: u32) -> u64 {
    1000 << level
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates the cascade: which levels' queues a delay passes through.
    fn path(secs: u64) -> Vec<u32> {
        let key = routing_key(secs, "p");
        let words: Vec<&str> = key.split('.').collect();
        (0..=entry_level(secs))
            .rev()
            .filter(|&level| {
                let pattern = level_pattern(level, true);
                let pwords: Vec<&str> = pattern.split('.').collect();
                pwords
                    .iter()
                    .zip(&words)
                    .take_while(|(p, _)| **p != "#")
                    .all(|(p, w)| *p == "*" || p == w)
            })
            .collect()
    }

    #[test]
    fn levels_cover_the_maximum_delay() {
        assert_eq!(LEVELS, 18);
        assert_eq!(
            routing_key(MAX_DELAY_SECS, "p"),
            format!("{}p", "1.".repeat(18))
        );
    }

    #[test]
    fn time_spent_equals_the_delay() {
        for secs in [0, 1, 2, 3, 30, 1000, 65_537, MAX_DELAY_SECS] {
            let waited: u64 = path(secs).iter().map(|&l| level_ttl_ms(l) / 1000).sum();
            assert_eq!(waited, secs, "delay {secs}");
        }
    }

    #[test]
    fn entry_level_is_the_top_bit() {
        assert_eq!(entry_level(0), 0);
        assert_eq!(entry_level(1), 0);
        assert_eq!(entry_level(5), 2);
        assert_eq!(entry_level(u64::MAX), LEVELS - 1);
    }

    #[test]
    fn patterns_address_one_word() {
        assert_eq!(level_pattern(LEVELS - 1, true), "1.#");
        assert_eq!(level_pattern(0, false), format!("{}0.#", "*.".repeat(17)));
    }
}
