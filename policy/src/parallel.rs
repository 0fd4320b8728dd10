//! Work split over threads with its order kept, so plan reading and report writing give the same
//! result whatever the number of threads.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc;
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

/// `f` of every item, handed to `consume` in item order as soon as it and those before it are
/// computed, on up to `threads` threads that take the items in turn (thread `w` of `n` takes items
/// `w`, `w + n`, …) and each run at most two items ahead of `consume`. So results are consumed
/// while later ones are computed, only a few are held at a time, and each thread keeps its own
/// memory warm for the next item. Stops at the first error of `consume`. Where a thread cannot
/// be started, its items are computed on the caller's.
pub fn for_each_ordered<T: Sync, R: Send, E>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
    mut consume: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().try_for_each(|item| consume(f(item)));
    }
    let f = &f;
    thread::scope(|s| {
        let results: Vec<Option<mpsc::Receiver<R>>> = (0..threads)
            .map(|w| {
                let (sender, receiver) = mpsc::sync_channel(2);
                let compute = move || {
                    for item in items.iter().skip(w).step_by(threads) {
                        // The caller stopped (an error): nothing more is wanted.
                        if sender.send(f(item)).is_err() {
                            return;
                        }
                    }
                };
                thread::Builder::new()
                    .spawn_scoped(s, compute)
                    .ok()
                    .map(|_| receiver)
            })
            .collect();
        for (i, item) in items.iter().enumerate() {
            let result = match &results[i % threads] {
                Some(receiver) => match receiver.recv() {
                    Ok(result) => result,
                    // Its thread panicked: the scope passes the panic on when it ends.
                    Err(_) => break,
                },
                None => f(item),
            };
            consume(result)?;
        }
        Ok(())
    })
}

/// The whole of the file at `path`, read in up to `threads` parts at once where the system can
/// read at an offset: copying a large plan into memory is then shared by the cores.
pub fn read_file(path: &Path, threads: usize) -> io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        // Zeroed memory comes from the system untouched: each part's thread touches its own.
        let mut text = vec![0; len];
        let part = len.div_ceil(threads.max(1)).max(1);
        let read: io::Result<()> = thread::scope(|s| {
            let parts: Vec<_> = text
                .chunks_mut(part)
                .zip((0u64..).step_by(part))
                .map(|(chunk, at)| {
                    let file = &file;
                    thread::Builder::new().spawn_scoped(s, move || file.read_exact_at(chunk, at))
                })
                .collect();
            parts.into_iter().try_for_each(|part| {
                part?
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        });
        // A file that changed size while it was read, or parts that found no thread, are read
        // again, whole.
        let mut more = [0u8; 1];
        if read.is_ok() && file.read_at(&mut more, len as u64)? == 0 {
            return Ok(text);
        }
    }
    std::fs::read(path)
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

    #[test]
    fn files_read_in_parts_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 7, 100_003] {
            let path = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            for threads in [1, 2, 3, 16] {
                assert_eq!(
                    super::read_file(&path, threads).unwrap(),
                    bytes,
                    "{len} {threads}"
                );
            }
        }
        let missing = super::read_file(&dir.path().join("missing"), 2).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn ordered_consumption_whatever_the_threads_and_stops_at_an_error() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [1, 2, 3, 7, 64, 5000] {
            let mut seen = Vec::new();
            let done: Result<(), ()> = super::for_each_ordered(
                &items,
                threads,
                |i| i * 3,
                |r| {
                    seen.push(r);
                    Ok(())
                },
            );
            assert_eq!(done, Ok(()));
            assert_eq!(
                seen,
                items.iter().map(|i| i * 3).collect::<Vec<_>>(),
                "{threads}"
            );
            let mut taken = 0;
            let stopped = super::for_each_ordered(
                &items,
                threads,
                |i| *i,
                |r| {
                    taken += 1;
                    if r == 10 { Err(r) } else { Ok(()) }
                },
            );
            assert_eq!((stopped, taken), (Err(10), 11), "{threads}");
        }
    }
}
