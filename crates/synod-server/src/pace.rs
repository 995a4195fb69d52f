//! A token bucket that makes a flood of requests wait instead of failing: each request
//! takes a token, tokens come back at a fixed rate, and a request that finds none waits
//! until one is due. Well-behaved clients never wait; a flooding one is slowed to the rate.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Pace {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl Pace {
    /// A bucket of `per_second` tokens, refilled at `per_second` a second.
    pub fn new(per_second: u32) -> Pace {
        Pace {
            per_second: f64::from(per_second.max(1)),
            tokens: f64::from(per_second.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes a token; how long to wait before the request may go on (zero if one was there).
    pub fn take(&mut self) -> Duration {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }

    /// Takes a token and waits until it is due.
    pub async fn wait(&mut self) {
        let delay = self.take();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of the rate goes through at once; past it each request waits its share.
    #[test]
    fn bursts_pass_and_floods_wait() {
        let mut pace = Pace::new(100);
        for _ in 0..100 {
            assert_eq!(pace.take(), Duration::ZERO);
        }
        let wait = pace.take();
        assert!(wait > Duration::from_millis(5) && wait <= Duration::from_millis(11), "{wait:?}");
        let later = pace.take();
        assert!(later > wait, "each further request waits longer: {later:?} after {wait:?}");
    }
}
