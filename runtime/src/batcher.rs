//! The dynamic batcher: requests queue in a bounded channel; a worker thread closes a batch when it
//! holds `max_batch_size` rows or when its oldest request has waited `max_queue_delay`, runs all the
//! rows as one forward pass, and splits the results back in order.
//!
//! Memory is bounded by construction: the queue holds at most `queue_capacity` requests and a full
//! queue refuses new ones at once instead of buffering them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::backend::Backend;
use crate::metrics::Metrics;

/// How batches are formed and how long requests may wait.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// A batch closes once it holds this many rows; a single request may carry at most this many.
    pub max_batch_size: usize,
    /// A batch closes once its oldest request has waited this long, full or not.
    pub max_queue_delay: Duration,
    /// Requests that may wait in the queue; more are refused.
    pub queue_capacity: usize,
    /// A request not answered within this time gets an error instead of a late answer.
    pub request_timeout: Duration,
}

/// Why an inference was not answered with outputs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InferError {
    /// The queue is full: the caller should retry later.
    #[error("the inference queue is full ({capacity} requests waiting); retry later")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The request was not answered within its timeout.
    #[error("the request was not answered within its timeout of {timeout_ms} ms")]
    Timeout {
        /// The timeout that expired.
        timeout_ms: u128,
    },
    /// One request carried more rows than a batch may hold.
    #[error(
        "the request has {rows} rows, more than max_batch_size ({max}); split it into smaller requests"
    )]
    TooManyRows {
        /// Rows in the request.
        rows: usize,
        /// The batch limit.
        max: usize,
    },
    /// The batcher is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The backend failed on the batch this request was part of.
    #[error("the backend failed on this request's batch: {0}")]
    Backend(String),
}

struct Job {
    input: Vec<f32>,
    rows: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, InferError>>,
}

/// The submitting side of the batcher, shared by all HTTP handlers.
pub struct Batcher {
    queue: Sender<Job>,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
}

/// The worker thread; join it after the last [`Batcher`] is dropped to wait for the queue to drain.
pub struct BatchWorker(JoinHandle<()>);

impl BatchWorker {
    /// Waits until every queued request has been answered and the worker has exited.
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the batch worker panicked while draining");
        }
    }
}

impl Batcher {
    /// Starts the worker thread that drives `backend`.
    pub fn start(
        backend: Box<dyn Backend>,
        input_width: usize,
        output_width: usize,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Batcher, BatchWorker)> {
        let (queue, jobs) = crossbeam_channel::bounded(settings.queue_capacity);
        let worker = Worker {
            backend,
            jobs,
            settings,
            metrics: metrics.clone(),
            input_width,
            output_width,
            staging: Vec::with_capacity(settings.max_batch_size * input_width),
        };
        let handle = std::thread::Builder::new()
            .name("gpucap-batcher".into())
            .spawn(move || worker.run())?;
        Ok((
            Batcher {
                queue,
                settings,
                metrics,
            },
            BatchWorker(handle),
        ))
    }

    /// The settings the batcher runs with.
    pub fn settings(&self) -> BatchSettings {
        self.settings
    }

    /// Fails with [`InferError::QueueFull`] (and counts the refusal) when the queue has no room right
    /// now, so a caller can refuse before spending work on a request that could not be queued.
    pub fn refuse_if_full(&self) -> Result<(), InferError> {
        if self.queue.is_full() {
            return Err(self.refuse());
        }
        Ok(())
    }

    fn refuse(&self) -> InferError {
        self.metrics.reject("queue_full");
        InferError::QueueFull {
            capacity: self.settings.queue_capacity,
        }
    }

    /// Queues `rows` rows (row-major in `input`) and waits for their outputs.
    pub async fn infer(&self, input: Vec<f32>, rows: usize) -> Result<Vec<f32>, InferError> {
        if rows > self.settings.max_batch_size {
            return Err(InferError::TooManyRows {
                rows,
                max: self.settings.max_batch_size,
            });
        }
        let enqueued = Instant::now();
        let deadline = enqueued + self.settings.request_timeout;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            input,
            rows,
            enqueued,
            deadline,
            reply,
        };
        match self.queue.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
            }
            Err(TrySendError::Full(_)) => return Err(self.refuse()),
            Err(TrySendError::Disconnected(_)) => return Err(InferError::ShuttingDown),
        }
        let timeout = InferError::Timeout {
            timeout_ms: self.settings.request_timeout.as_millis(),
        };
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferError::Backend("the batch worker stopped".into())),
            Err(_) => {
                self.metrics.reject("timeout");
                Err(timeout)
            }
        }
    }
}

struct Worker {
    backend: Box<dyn Backend>,
    jobs: Receiver<Job>,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    input_width: usize,
    output_width: usize,
    staging: Vec<f32>,
}

impl Worker {
    fn run(mut self) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                // All senders gone and the queue empty: every accepted request has been answered.
                None => match self.jobs.recv() {
                    Ok(job) => self.take(job),
                    Err(_) => return,
                },
            };
            let mut batch = Vec::new();
            let mut rows = 0;
            if let Some(job) = self.admit(first) {
                rows = job.rows;
                batch.push(job);
            }
            let close_at = batch
                .first()
                .map(|j| j.enqueued + self.settings.max_queue_delay);
            while let Some(close_at) = close_at {
                if rows >= self.settings.max_batch_size {
                    break;
                }
                // Requests already waiting join at once, even past the delay: under load the
                // queue is the batch.
                let next = match self.jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => match self.jobs.recv_deadline(close_at) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                };
                let next = self.take(next);
                let Some(job) = self.admit(next) else {
                    continue;
                };
                if rows + job.rows > self.settings.max_batch_size {
                    carried = Some(job);
                    break;
                }
                rows += job.rows;
                batch.push(job);
            }
            if !batch.is_empty() {
                self.execute(batch, rows);
            }
        }
    }

    /// Bookkeeping for a job leaving the queue.
    fn take(&self, job: Job) -> Job {
        self.metrics.queue_depth.dec();
        job
    }

    /// Drops jobs nobody waits for any more, so an overloaded server does not spend compute on
    /// answers that would arrive after their deadline.
    fn admit(&self, job: Job) -> Option<Job> {
        if job.reply.is_closed() {
            return None;
        }
        if Instant::now() >= job.deadline {
            let _ = job.reply.send(Err(InferError::Timeout {
                timeout_ms: self.settings.request_timeout.as_millis(),
            }));
            return None;
        }
        Some(job)
    }

    fn execute(&mut self, batch: Vec<Job>, rows: usize) {
        let started = Instant::now();
        self.staging.clear();
        for job in &batch {
            self.metrics
                .queue_wait_seconds
                .observe(started.duration_since(job.enqueued).as_secs_f64());
            self.staging.extend_from_slice(&job.input);
        }
        debug_assert_eq!(self.staging.len(), rows * self.input_width);
        let result = self.backend.forward(&self.staging, rows);
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.compute_seconds.observe(elapsed);
        self.metrics.backend_busy_seconds.inc_by(elapsed);
        self.metrics.batch_rows.observe(rows as f64);
        match result {
            Ok(outputs) => {
                let mut offset = 0;
                for job in batch {
                    let len = job.rows * self.output_width;
                    let _ = job.reply.send(Ok(outputs[offset..offset + len].to_vec()));
                    offset += len;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows, "batch failed");
                for job in batch {
                    let _ = job.reply.send(Err(InferError::Backend(e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;
    use std::sync::Mutex;

    /// A backend that doubles its input and records batch sizes, optionally slowly. It stands in
    /// for the model, not for the batcher under test.
    struct Doubler {
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
        out: Vec<f32>,
    }

    impl Backend for Doubler {
        fn describe(&self) -> String {
            "doubler".into()
        }
        fn forward(&mut self, input: &[f32], rows: usize) -> Result<&[f32], BackendError> {
            std::thread::sleep(self.delay);
            self.batches.lock().unwrap().push(rows);
            self.out = input.iter().map(|x| x * 2.0).collect();
            Ok(&self.out)
        }
    }

    fn start(
        settings: BatchSettings,
        delay: Duration,
    ) -> (Arc<Batcher>, BatchWorker, Arc<Mutex<Vec<usize>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let backend = Doubler {
            batches: batches.clone(),
            delay,
            out: Vec::new(),
        };
        let metrics = Arc::new(Metrics::new("t", "doubler"));
        let (b, w) = Batcher::start(Box::new(backend), 2, 2, settings, metrics).unwrap();
        (Arc::new(b), w, batches)
    }

    fn settings(max_batch_size: usize, delay_ms: u64, capacity: usize) -> BatchSettings {
        BatchSettings {
            max_batch_size,
            max_queue_delay: Duration::from_millis(delay_ms),
            queue_capacity: capacity,
            request_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_share_batches_and_get_their_own_rows_back() {
        let (b, _w, batches) = start(settings(64, 50, 100), Duration::ZERO);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let v = i as f32;
                    let out = b.infer(vec![v, v + 0.5], 1).await.unwrap();
                    assert_eq!(out, vec![2.0 * v, 2.0 * v + 1.0]);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 32);
        assert!(batches.len() < 32, "no batching happened: {batches:?}");
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_max_batch_size() {
        let (b, _w, batches) = start(settings(4, 20, 100), Duration::ZERO);
        let futs: Vec<_> = (0..10).map(|_| b.infer(vec![1.0; 6], 3)).collect();
        for r in futures_join(futs).await {
            assert_eq!(r.unwrap(), vec![2.0; 6]);
        }
        assert!(batches.lock().unwrap().iter().all(|&r| r <= 4));
        let too_big = b.infer(vec![0.0; 10], 5).await.unwrap_err();
        assert_eq!(too_big, InferError::TooManyRows { rows: 5, max: 4 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_queue_refuses_at_once() {
        let (b, _w, _) = start(settings(1, 0, 2), Duration::from_millis(200));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    (b.infer(vec![1.0, 1.0], 1).await, t.elapsed())
                })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            let (r, took) = t.await.unwrap();
            if let Err(InferError::QueueFull { capacity: 2 }) = r {
                refused += 1;
                assert!(took < Duration::from_millis(100), "refusal took {took:?}");
            }
        }
        assert!(refused >= 4, "only {refused} of 8 refused with capacity 2");
    }

    #[tokio::test]
    async fn a_request_past_its_timeout_gets_an_error() {
        let mut s = settings(1, 0, 10);
        s.request_timeout = Duration::from_millis(50);
        let (b, _w, _) = start(s, Duration::from_millis(300));
        let (first, second) = tokio::join!(b.infer(vec![1.0, 1.0], 1), b.infer(vec![1.0, 1.0], 1));
        assert_eq!(first.unwrap_err(), InferError::Timeout { timeout_ms: 50 });
        assert_eq!(second.unwrap_err(), InferError::Timeout { timeout_ms: 50 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dropping_the_batcher_drains_every_accepted_request() {
        let (b, worker, _) = start(settings(2, 1, 100), Duration::from_millis(5));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(vec![1.0, 2.0], 1).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(b);
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), vec![2.0, 4.0]);
        }
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .unwrap();
    }

    async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
        for h in handles {
            out.push(h.await);
        }
        out
    }
}
