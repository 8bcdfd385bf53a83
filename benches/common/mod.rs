//! Helpers shared by the bench binaries.

use std::time::{Duration, Instant};

/// Median wall time of `iters` calls after `iters / 10 + 1` warm-up calls.
pub fn median(iters: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters / 10 + 1 {
        f();
    }
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
