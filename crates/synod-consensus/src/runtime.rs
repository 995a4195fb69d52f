//! [`SynodRuntime`]: the async runtime synod runs openraft on. It is openraft's tokio
//! runtime, except for where its random numbers (election timeouts, tick jitter) come from:
//! a per-thread generator that the deterministic simulator seeds, so that a seed replays
//! the same elections. A server never seeds it, and draws its seeds from the OS.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use openraft::AsyncRuntime;
use openraft::OptionalSend;
use openraft_rt_tokio::TokioRuntime;
use rand_openraft::SeedableRng;
use rand_openraft::rngs::SmallRng;

thread_local! {
    /// The seed of this thread's next generator, once the simulator has set one.
    static NEXT_SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes every generator openraft asks for on this thread from now on follow from `seed`.
/// The simulator runs a whole cluster on one thread and calls this before starting it.
pub fn seed_thread_rng(seed: u64) {
    NEXT_SEED.with(|next| next.set(Some(seed)));
}

/// splitmix64: a seed sequence whose successive values are unrelated.
fn splitmix64(seed: u64) -> u64 {
    let z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// openraft's tokio runtime with seedable random numbers.
#[derive(Debug)]
pub struct SynodRuntime(TokioRuntime);

impl AsyncRuntime for SynodRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    #[track_caller]
    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> SmallRng {
        let seeded = NEXT_SEED.with(|next| {
            let seed = next.get()?;
            next.set(Some(splitmix64(seed)));
            Some(seed)
        });
        match seeded {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut TokioRuntime::thread_rng()),
        }
    }

    fn new(threads: usize) -> Self {
        SynodRuntime(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, std::io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        TokioRuntime::spawn_blocking(f)
    }
}

/// A random number from this thread's generator: the OS's entropy in a server, the seed's
/// sequence under the simulator. For ids a member picks, such as lease ids.
pub fn random_u64() -> u64 {
    use rand_openraft::Rng as _;
    <SynodRuntime as AsyncRuntime>::thread_rng().next_u64()
}

#[cfg(test)]
mod tests {
    use rand_openraft::RngExt;

    use super::*;

    /// A seeded thread draws the same numbers again, and another seed other numbers.
    #[test]
    fn a_seed_replays_the_same_numbers() {
        let draw =
            || (0..4).map(|_| SynodRuntime::thread_rng().random_range(0..1_000_000u64)).collect::<Vec<_>>();
        seed_thread_rng(42);
        let first = draw();
        seed_thread_rng(42);
        assert_eq!(draw(), first);
        seed_thread_rng(43);
        assert_ne!(draw(), first);
    }
}
