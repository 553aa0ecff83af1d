//! The one backoff of the daemon's retry loops: exponential, with jitter (the `backon`
//! crate), capped, never giving up.
//!
//! Used wherever a task waits before trying again for as long as it runs: a peer's export
//! stream reconnecting ([`crate::sync::follow`]), the etcd election starting over
//! ([`crate::leadership`]), a registry's TLS handshake checked once it answers
//! ([`crate::daemon`]). Jitter keeps the members of a cluster, which all lose the same peer
//! or etcd at once, from retrying in step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Waits that double from a first step up to a cap; each wait is drawn between half the
/// step and the whole step, so it is never longer than the step itself.
#[derive(Debug)]
pub struct Backoff {
    /// backon's iterator over half-steps, each plus a jitter of up to itself.
    waits: ExponentialBackoff,
    /// The cap (the longest wait).
    max: Duration,
}

impl Backoff {
    /// Waits from about `first` (the first wait) doubling up to `max` (every wait after).
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let waits = ExponentialBuilder::new()
            .with_min_delay(first / 2)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Backoff { waits, max }
    }

    /// The next wait: between half the current step and the step, at most the cap.
    pub fn next_wait(&mut self) -> Duration {
        self.waits.next().unwrap_or(self.max).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_never_end() {
        let first = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        let mut backoff = Backoff::new(first, max);
        let mut step = first;
        for _ in 0..40 {
            let wait = backoff.next_wait();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} outside {step:?}"
            );
            step = (step * 2).min(max);
        }
    }
}
