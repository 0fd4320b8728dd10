//! Long-lived large-stack threads for evaluations that come one resource at a time.
//!
//! The provider evaluates rules once per planned resource. Starting a thread with the stack deep
//! expressions need costs about 100 µs, as much as a dozen rules; these threads start once per
//! process and take the evaluations in turn.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use super::{STACK_SIZE, StackError, panic_message};

type Job = Box<dyn FnOnce() + Send>;

/// At most this many workers: plan-time evaluations are short, and Terraform plans at most ten
/// resources at once.
const MAX_WORKERS: usize = 4;

/// Runs `f` on one of the worker threads and waits for its result. A panic in `f` becomes an
/// error and leaves the worker serving.
pub fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StackError> {
    let jobs = workers()?;
    let (done, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let outcome = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()));
        // The caller waits for this; it is gone only if its own thread ended.
        let _ = done.send(outcome);
    });
    jobs.send(job)
        .map_err(|_| StackError::Spawn("the evaluation threads have stopped".into()))?;
    result
        .recv()
        .map_err(|_| StackError::Panicked("the evaluation thread ended".into()))?
        .map_err(StackError::Panicked)
}

fn workers() -> Result<&'static Sender<Job>, StackError> {
    static JOBS: OnceLock<Result<Sender<Job>, StackError>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let count = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
        for _ in 0..count {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("gpucap-policy-worker".into())
                .stack_size(STACK_SIZE)
                .spawn(move || serve(&queue))
                .map_err(|e| StackError::Spawn(e.to_string()))?;
        }
        Ok(jobs)
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn serve(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take a job, not while running it. A poisoned lock cannot
        // happen (jobs run outside it), but would only mean another worker died taking a job.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_and_survives_their_panics() {
        assert_eq!(run(|| 6 * 7), Ok(42));
        let err = run(|| -> u8 { panic!("boom") }).unwrap_err();
        assert_eq!(err, StackError::Panicked("boom".into()));
        assert_eq!(run(|| "still serving"), Ok("still serving"));
        // Deep recursion that would overflow a default 2 MiB thread stack.
        fn depth(n: u32) -> u32 {
            // A frame of at least 1 KiB the optimizer cannot remove.
            std::hint::black_box([0u8; 1024]);
            if n == 0 { 0 } else { depth(n - 1) + 1 }
        }
        assert_eq!(run(|| depth(20_000)), Ok(20_000));
    }
}
