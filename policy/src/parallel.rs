//! Work split over threads with its order kept, so plan reading and report writing give the same
//! result whatever the number of threads.

use std::thread;

/// `f` of every item, in item order, computed on up to `threads` threads that each take a
/// contiguous part. Where a thread cannot be started its part is computed on the caller's.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let part = items.len().div_ceil(threads);
    let f = &f;
    thread::scope(|s| {
        let mut pending = Vec::with_capacity(threads);
        for chunk in items.chunks(part) {
            let compute = move || chunk.iter().map(f).collect::<Vec<R>>();
            pending.push(match thread::Builder::new().spawn_scoped(s, compute) {
                Ok(handle) => Part::Running(handle),
                Err(_) => Part::Done(compute()),
            });
        }
        pending
            .into_iter()
            .flat_map(|p| match p {
                Part::Done(done) => done,
                // A panic in `f` is a bug; it goes on in the caller as it would have unthreaded.
                Part::Running(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            })
            .collect()
    })
}

/// A part of the items: on its thread, or already computed.
enum Part<'s, R> {
    Running(thread::ScopedJoinHandle<'s, Vec<R>>),
    Done(Vec<R>),
}

#[cfg(test)]
mod tests {
    #[test]
    fn order_is_kept_whatever_the_threads() {
        let items: Vec<u32> = (0..1000).collect();
        let want: Vec<u32> = items.iter().map(|i| i * 3).collect();
        for threads in [1, 2, 3, 7, 64, 5000] {
            assert_eq!(super::map(&items, threads, |i| i * 3), want, "{threads}");
        }
        assert!(super::map(&[] as &[u32], 4, |i| *i).is_empty());
    }
}
