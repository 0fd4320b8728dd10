//! The dynamic batcher: requests queue in a bounded channel; a worker thread per backend (one per
//! GPU, or one for the CPU) forms a batch, runs all its rows as one forward pass, and splits the
//! results back in order. Workers pull from the one shared queue, so a free GPU takes the next
//! batch.
//!
//! A batch never waits in vain. Everything already queued joins at once; while the backend
//! computes, new requests queue and the next batch takes them. An idle backend holds a batch open
//! for more requests only as long as the recent arrival rate says one is coming soon enough to be
//! worth it ([`pace`]), and never past `max_queue_delay` after the oldest request arrived. So a
//! lone client is served without any window, and a burst still fills batches.
//!
//! A backend that computes asynchronously is handed the next batch (already queued requests only,
//! never waiting for more) before the current one is collected, so its upload overlaps the
//! current compute.
//!
//! Memory is bounded by construction: the queue holds at most `queue_capacity` requests and a full
//! queue refuses new ones at once instead of buffering them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError};
use crate::metrics::Metrics;

pub mod pace;

use pace::Pace;

/// How often a worker whose device failed, and which is the last one left, tries to rebuild it.
const RECOVERY_RETRY: Duration = Duration::from_secs(5);

/// How batches are formed and how long requests may wait.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// A batch closes once it holds this many rows; a single request may carry at most this many.
    pub max_batch_size: usize,
    /// The longest an idle backend holds a batch open for more requests, counted from its oldest
    /// request's arrival. It waits less (usually not at all) when more requests are unlikely to
    /// come soon enough; see [`pace`].
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
    /// No backend can compute: every device failed and none could be rebuilt yet.
    #[error("no device can compute right now ({0}); retry later or restart the runtime")]
    Unavailable(String),
}

/// What a batch worker drives: something that computes a batch of requests at once. The native
/// backends ([`NativeEngine`]) take rows of FP32 values; an ONNX session takes named tensors.
pub trait Engine: Send + 'static {
    /// One request's inputs.
    type Input: Send + 'static;
    /// One request's outputs.
    type Output: Send + 'static;

    /// A short human description for logs and metrics, e.g. `cpu (2 threads)`.
    fn describe(&self) -> String;

    /// Batches that may be started and not yet finished at once.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Whether a request with inputs `next` may join a batch that began with `first` (tensors
    /// whose trailing dimensions differ cannot be concatenated).
    fn joins(&self, first: &Self::Input, next: &Self::Input) -> bool {
        let _ = (first, next);
        true
    }

    /// Starts a batch of `rows` rows made of `inputs`, in order.
    fn start(&mut self, inputs: &[&Self::Input], rows: usize) -> Result<(), BackendError>;

    /// Waits for the oldest started batch and returns its outputs, split into one per request of
    /// `rows[i]` rows.
    fn finish(&mut self, rows: &[usize]) -> Result<Vec<Self::Output>, BackendError>;

    /// Called after a batch failed: brings the engine back to a usable state or says why it
    /// cannot.
    fn recover(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A native [`Backend`] as an [`Engine`]: each request is `rows × input_width` FP32 values, and
/// gets `rows × output_width` back.
pub struct NativeEngine {
    backend: Box<dyn Backend>,
    output_width: usize,
}

impl NativeEngine {
    /// Wraps `backend`, whose model's rows are `output_width` wide.
    pub fn new(backend: Box<dyn Backend>, output_width: usize) -> NativeEngine {
        NativeEngine {
            backend,
            output_width,
        }
    }
}

impl Engine for NativeEngine {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn describe(&self) -> String {
        self.backend.describe()
    }

    fn max_in_flight(&self) -> usize {
        self.backend.max_in_flight()
    }

    fn start(&mut self, inputs: &[&Vec<f32>], rows: usize) -> Result<(), BackendError> {
        debug_assert_eq!(
            inputs.iter().map(|input| input.len()).sum::<usize>(),
            rows * self.backend.input_width(),
            "the codec checks each request's length against the model"
        );
        self.backend.start(rows, &mut |buffer| {
            let mut offset = 0;
            for input in inputs {
                buffer[offset..offset + input.len()].copy_from_slice(input);
                offset += input.len();
            }
        })
    }

    fn finish(&mut self, rows: &[usize]) -> Result<Vec<Vec<f32>>, BackendError> {
        let outputs = self.backend.finish()?;
        let mut offset = 0;
        Ok(rows
            .iter()
            .map(|n| {
                let len = n * self.output_width;
                let piece = outputs[offset..offset + len].to_vec();
                offset += len;
                piece
            })
            .collect())
    }

    fn recover(&mut self) -> Result<(), BackendError> {
        self.backend.recover()
    }
}

struct Job<E: Engine> {
    input: E::Input,
    rows: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<E::Output, InferError>>,
}

/// How many workers can compute. The server is ready while at least one can.
struct Health {
    up: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Marks one worker down and returns how many are still up.
    fn down(&self) -> usize {
        let left = self.up.fetch_sub(1, Ordering::SeqCst) - 1;
        self.metrics.healthy_backends.set(left as i64);
        left
    }

    fn up(&self) {
        let now = self.up.fetch_add(1, Ordering::SeqCst) + 1;
        self.metrics.healthy_backends.set(now as i64);
    }
}

/// The submitting side of the batcher, shared by all HTTP handlers.
pub struct Batcher<E: Engine> {
    queue: Sender<Job<E>>,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The worker threads; join them after the last [`Batcher`] is dropped to wait for the queue to
/// drain.
pub struct BatchWorkers(Vec<JoinHandle<()>>);

impl BatchWorkers {
    /// Waits until every queued request has been answered and every worker has exited.
    pub fn join(self) {
        for worker in self.0 {
            if worker.join().is_err() {
                tracing::error!("a batch worker panicked while draining");
            }
        }
    }
}

impl<E: Engine> Batcher<E> {
    /// Starts one worker thread per engine, all pulling from one queue.
    pub fn start(
        backends: Vec<E>,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Batcher<E>, BatchWorkers)> {
        let (queue, jobs) = crossbeam_channel::bounded(settings.queue_capacity);
        metrics.healthy_backends.set(backends.len() as i64);
        let health = Arc::new(Health {
            up: AtomicUsize::new(backends.len()),
            metrics: metrics.clone(),
        });
        let workers = backends
            .into_iter()
            .enumerate()
            .map(|(i, backend)| {
                let worker = Worker {
                    backend,
                    jobs: jobs.clone(),
                    settings,
                    metrics: metrics.clone(),
                    health: health.clone(),
                    last_finished: Instant::now(),
                    pace: Pace::default(),
                    epoch: Instant::now(),
                };
                std::thread::Builder::new()
                    .name(format!("gpucap-batcher-{i}"))
                    .spawn(move || worker.run())
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((
            Batcher {
                queue,
                settings,
                metrics,
                health,
            },
            BatchWorkers(workers),
        ))
    }

    /// The settings the batcher runs with.
    pub fn settings(&self) -> BatchSettings {
        self.settings
    }

    /// Whether at least one backend can compute.
    pub fn ready(&self) -> bool {
        self.health.up.load(Ordering::SeqCst) > 0
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

    /// Queues a request of `rows` rows and waits for its outputs.
    pub async fn infer(&self, input: E::Input, rows: usize) -> Result<E::Output, InferError> {
        let answer = self.enqueue(input, rows)?.answer().await;
        if let Err(InferError::Timeout { .. }) = answer {
            self.metrics.reject("timeout");
        }
        answer
    }

    /// Queues `rows` rows: the request is accepted (or refused) at once, and its answer comes
    /// whether or not this batcher is still there to wait for it.
    fn enqueue(&self, input: E::Input, rows: usize) -> Result<Pending<E::Output>, InferError> {
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
        Ok(Pending {
            answer,
            deadline,
            timeout: self.settings.request_timeout,
        })
    }
}

/// An accepted request's answer, to come.
struct Pending<O> {
    answer: oneshot::Receiver<Result<O, InferError>>,
    deadline: Instant,
    timeout: Duration,
}

impl<O> Pending<O> {
    /// The outputs, or why there are none (a timeout once the deadline passes).
    async fn answer(self) -> Result<O, InferError> {
        match tokio::time::timeout_at(self.deadline.into(), self.answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferError::Backend("the batch worker stopped".into())),
            Err(_) => Err(InferError::Timeout {
                timeout_ms: self.timeout.as_millis(),
            }),
        }
    }
}

struct Worker<E: Engine> {
    backend: E,
    jobs: Receiver<Job<E>>,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// When the backend last handed back a batch: with batches overlapping, a batch's busy time
    /// starts here, not when it was started.
    last_finished: Instant,
    /// Recent arrival gaps and compute times, which decide how long an idle batch stays open.
    pace: Pace,
    /// What [`Pace`]'s times count from.
    epoch: Instant,
}

/// A batch handed to the backend and not yet collected.
struct InFlight<E: Engine> {
    jobs: Vec<Job<E>>,
    rows: usize,
    started: Instant,
}

/// What forming a batch produced.
enum Next<E: Engine> {
    Batch(Vec<Job<E>>, usize),
    /// Nothing to run right now.
    Nothing,
    /// Every sender is gone and the queue is empty.
    Closed,
}

impl<E: Engine> Worker<E> {
    fn run(mut self) {
        let depth = self.backend.max_in_flight().max(1);
        let mut carried: Option<Job<E>> = None;
        let mut in_flight: VecDeque<InFlight<E>> = VecDeque::with_capacity(depth);
        let mut closed = false;
        loop {
            if !closed && in_flight.len() < depth {
                // Wait for requests only when the backend is idle; with a batch in flight, only
                // requests already queued join, so finished results are never held back.
                match self.next_batch(&mut carried, in_flight.is_empty()) {
                    Next::Batch(jobs, rows) => {
                        match self.launch(jobs, rows) {
                            Some(batch) => in_flight.push_back(batch),
                            None => {
                                if !self.after_failure(&mut in_flight, &mut carried) {
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                    Next::Nothing => {}
                    Next::Closed => closed = true,
                }
            }
            let collected = match in_flight.pop_front() {
                Some(batch) => self.complete(batch),
                // All senders gone and the queue empty: every accepted request has been answered.
                None if closed => return,
                None => true,
            };
            if !collected && !self.after_failure(&mut in_flight, &mut carried) {
                return;
            }
        }
    }

    /// Forms the next batch. With `wait` (the backend is idle) it blocks for a first request and
    /// then holds the batch open as long as [`Pace`] says more are worth waiting for, at most
    /// until the oldest has waited `max_queue_delay`; otherwise it takes only what is queued.
    fn next_batch(&mut self, carried: &mut Option<Job<E>>, wait: bool) -> Next<E> {
        let first = match carried.take() {
            Some(job) => job,
            None if wait => match self.jobs.recv() {
                Ok(job) => self.take(job),
                Err(_) => return Next::Closed,
            },
            None => match self.jobs.try_recv() {
                Ok(job) => self.take(job),
                Err(TryRecvError::Empty) => return Next::Nothing,
                Err(TryRecvError::Disconnected) => return Next::Closed,
            },
        };
        let Some(first) = self.admit(first) else {
            return Next::Nothing;
        };
        let latest_close = first.enqueued + self.settings.max_queue_delay;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < self.settings.max_batch_size {
            // Requests already waiting join at once, even past the delay: under load the
            // queue is the batch.
            let next = match self.jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) if !wait => break,
                Err(TryRecvError::Empty) => {
                    let Some(worth) = self.pace.wait_for_next(batch.len()) else {
                        break;
                    };
                    let until = (Instant::now() + worth).min(latest_close);
                    match self.jobs.recv_deadline(until) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let next = self.take(next);
            let Some(job) = self.admit(next) else {
                continue;
            };
            if rows + job.rows > self.settings.max_batch_size
                || !self.backend.joins(&batch[0].input, &job.input)
            {
                *carried = Some(job);
                break;
            }
            rows += job.rows;
            batch.push(job);
        }
        Next::Batch(batch, rows)
    }

    /// Bookkeeping for a job leaving the queue.
    fn take(&mut self, job: Job<E>) -> Job<E> {
        self.metrics.queue_depth.dec();
        self.pace
            .arrived(job.enqueued.saturating_duration_since(self.epoch));
        job
    }

    /// Drops jobs nobody waits for any more, so an overloaded server does not spend compute on
    /// answers that would arrive after their deadline.
    fn admit(&self, job: Job<E>) -> Option<Job<E>> {
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

    /// Hands a batch to the backend, writing the requests' rows straight into its input buffer.
    /// `None` when the backend refused it (its requests have been answered with the error).
    fn launch(&mut self, jobs: Vec<Job<E>>, rows: usize) -> Option<InFlight<E>> {
        let started = Instant::now();
        for job in &jobs {
            self.metrics
                .queue_wait_seconds
                .observe(started.duration_since(job.enqueued).as_secs_f64());
        }
        let inputs: Vec<&E::Input> = jobs.iter().map(|job| &job.input).collect();
        let result = self.backend.start(&inputs, rows);
        match result {
            Ok(()) => Some(InFlight {
                jobs,
                rows,
                started,
            }),
            Err(e) => {
                fail(jobs, rows, &e);
                None
            }
        }
    }

    /// Collects a batch's outputs and answers its requests. `false` when the batch failed.
    fn complete(&mut self, batch: InFlight<E>) -> bool {
        let rows: Vec<usize> = batch.jobs.iter().map(|job| job.rows).collect();
        let result = self.backend.finish(&rows);
        let now = Instant::now();
        let took = now.duration_since(batch.started);
        self.pace.computed(took);
        self.metrics.compute_seconds.observe(took.as_secs_f64());
        let busy_since = batch.started.max(self.last_finished);
        self.metrics
            .backend_busy_seconds
            .inc_by(now.duration_since(busy_since).as_secs_f64());
        self.last_finished = now;
        self.metrics.batch_rows.observe(batch.rows as f64);
        match result {
            Ok(outputs) => {
                for (job, output) in batch.jobs.into_iter().zip(outputs) {
                    let _ = job.reply.send(Ok(output));
                }
                true
            }
            Err(e) => {
                fail(batch.jobs, batch.rows, &e);
                false
            }
        }
    }

    /// After a failed batch: collects the batches started behind it (they ran on the same
    /// device), then asks the backend to recover. Returns whether this worker goes on serving.
    fn after_failure(
        &mut self,
        in_flight: &mut VecDeque<InFlight<E>>,
        carried: &mut Option<Job<E>>,
    ) -> bool {
        while let Some(batch) = in_flight.pop_front() {
            self.complete(batch);
        }
        let why = match self.backend.recover() {
            Ok(()) => return true,
            Err(e) => e.to_string(),
        };
        let left = self.health.down();
        tracing::error!(backend = %self.backend.describe(), error = %why, healthy_left = left, "backend out of service");
        if left > 0 {
            // Other devices serve the queue; hand back nothing but the request this worker held.
            if let Some(job) = carried.take() {
                let _ = job.reply.send(Err(InferError::Unavailable(why)));
            }
            return false;
        }
        self.serve_degraded(why, carried)
    }

    /// The last worker left without a usable device: answers every request at once with an error
    /// (rather than letting them time out) and retries recovery now and then. Returns `true` once
    /// the device is back, `false` when the queue has closed.
    fn serve_degraded(&mut self, mut why: String, carried: &mut Option<Job<E>>) -> bool {
        let mut next_attempt = Instant::now() + RECOVERY_RETRY;
        loop {
            if Instant::now() >= next_attempt {
                match self.backend.recover() {
                    Ok(()) => {
                        self.health.up();
                        tracing::info!(backend = %self.backend.describe(), "backend back in service");
                        return true;
                    }
                    Err(e) => why = e.to_string(),
                }
                next_attempt = Instant::now() + RECOVERY_RETRY;
            }
            let job = match carried.take() {
                Some(job) => job,
                None => match self.jobs.recv_deadline(next_attempt) {
                    Ok(job) => self.take(job),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return false,
                },
            };
            let _ = job.reply.send(Err(InferError::Unavailable(why.clone())));
        }
    }
}

/// Answers every request of a failed batch with the backend's error.
fn fail<E: Engine>(jobs: Vec<Job<E>>, rows: usize, error: &BackendError) {
    tracing::error!(%error, rows, "batch failed");
    for job in jobs {
        let _ = job.reply.send(Err(InferError::Backend(error.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A backend that doubles its input and records batch sizes, optionally slowly, optionally
    /// with several batches in flight, and optionally failing one batch. It stands in for the
    /// model, not for the batcher under test.
    struct Doubler {
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
        depth: usize,
        pending: VecDeque<(Vec<f32>, usize)>,
        out: Vec<f32>,
        /// The finished-batch count (1-based) that fails, and whether recovery then works.
        fail_at: Option<(usize, bool)>,
        finished: usize,
        most_in_flight: Arc<AtomicUsize>,
    }

    impl Doubler {
        fn new(delay: Duration) -> Doubler {
            Doubler {
                batches: Arc::default(),
                delay,
                depth: 1,
                pending: VecDeque::new(),
                out: Vec::new(),
                fail_at: None,
                finished: 0,
                most_in_flight: Arc::default(),
            }
        }
    }

    type Doubling = Batcher<NativeEngine>;

    impl Backend for Doubler {
        fn describe(&self) -> String {
            "doubler".into()
        }
        fn input_width(&self) -> usize {
            2
        }
        fn max_in_flight(&self) -> usize {
            self.depth
        }
        fn start(
            &mut self,
            rows: usize,
            fill: &mut dyn FnMut(&mut [f32]),
        ) -> Result<(), BackendError> {
            if self.pending.len() >= self.depth {
                return Err(BackendError::Protocol("too many in flight"));
            }
            let mut input = vec![0.0; rows * 2];
            fill(&mut input);
            self.pending.push_back((input, rows));
            self.most_in_flight
                .fetch_max(self.pending.len(), Ordering::SeqCst);
            Ok(())
        }
        fn finish(&mut self) -> Result<&[f32], BackendError> {
            let (input, rows) = self
                .pending
                .pop_front()
                .ok_or(BackendError::Protocol("nothing started"))?;
            std::thread::sleep(self.delay);
            self.finished += 1;
            self.batches.lock().unwrap().push(rows);
            if self.fail_at.is_some_and(|(n, _)| n == self.finished) {
                return Err(BackendError::Device {
                    device: "doubler".into(),
                    message: "injected fault".into(),
                });
            }
            self.out = input.iter().map(|x| x * 2.0).collect();
            Ok(&self.out)
        }
        fn recover(&mut self) -> Result<(), BackendError> {
            match self.fail_at {
                Some((_, false)) => Err(BackendError::Device {
                    device: "doubler".into(),
                    message: "could not be rebuilt".into(),
                }),
                _ => Ok(()),
            }
        }
    }

    fn start(
        settings: BatchSettings,
        delay: Duration,
    ) -> (Arc<Doubling>, BatchWorkers, Arc<Mutex<Vec<usize>>>) {
        let backend = Doubler::new(delay);
        let batches = backend.batches.clone();
        let (b, w) = start_with(settings, vec![backend]);
        (b, w, batches)
    }

    fn start_with(
        settings: BatchSettings,
        backends: Vec<Doubler>,
    ) -> (Arc<Doubling>, BatchWorkers) {
        let metrics = Arc::new(Metrics::new("t", "doubler"));
        let backends = backends
            .into_iter()
            .map(|b| NativeEngine::new(Box::new(b), 2))
            .collect();
        let (b, w) = Batcher::start(backends, settings, metrics).unwrap();
        (Arc::new(b), w)
    }

    async fn send_all(b: &Arc<Doubling>, n: usize) -> Vec<Result<Vec<f32>, InferError>> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.infer(vec![i as f32, 1.0], 1).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_asynchronous_backend_gets_the_next_batch_before_the_current_one_is_collected() {
        let mut backend = Doubler::new(Duration::from_millis(5));
        backend.depth = 2;
        let most = backend.most_in_flight.clone();
        let (b, _w) = start_with(settings(4, 1, 1000), vec![backend]);
        for (i, r) in send_all(&b, 200).await.into_iter().enumerate() {
            assert_eq!(r.unwrap(), vec![2.0 * i as f32, 2.0]);
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "batches never overlapped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_batch_fails_its_requests_and_the_recovered_backend_serves_on() {
        let mut backend = Doubler::new(Duration::ZERO);
        backend.fail_at = Some((1, true));
        let (b, _w) = start_with(settings(64, 0, 100), vec![backend]);
        let first = b.infer(vec![1.0, 1.0], 1).await.unwrap_err();
        assert_eq!(first, InferError::Backend("doubler: injected fault".into()));
        assert_eq!(b.infer(vec![1.0, 1.0], 1).await.unwrap(), vec![2.0, 2.0]);
        assert!(b.ready());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_backend_that_cannot_recover_makes_the_server_unready_and_refuses_at_once() {
        let mut backend = Doubler::new(Duration::ZERO);
        backend.fail_at = Some((1, false));
        let (b, _w) = start_with(settings(64, 0, 100), vec![backend]);
        assert!(matches!(
            b.infer(vec![1.0, 1.0], 1).await,
            Err(InferError::Backend(_))
        ));
        // The batch's requests are answered first; the worker then finds the device cannot be
        // rebuilt and marks the server unready.
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.ready() {
            assert!(Instant::now() < deadline, "still ready with no device");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = Instant::now();
        let refused = b.infer(vec![1.0, 1.0], 1).await.unwrap_err();
        // At once, not when the request times out (10 s).
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(
            refused,
            InferError::Unavailable("doubler: could not be rebuilt".into())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_device_serves_from_the_shared_queue_and_survivors_carry_on() {
        let healthy = Doubler::new(Duration::from_millis(2));
        let mut failing = Doubler::new(Duration::from_millis(2));
        failing.fail_at = Some((3, false));
        let (served_a, served_b) = (healthy.batches.clone(), failing.batches.clone());
        let (b, _w) = start_with(settings(2, 0, 1000), vec![healthy, failing]);
        let results = send_all(&b, 100).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        // The second device's third batch (one or two requests) fails; nothing else does.
        let b_batches = served_b.lock().unwrap().clone();
        assert_eq!(
            b_batches.len(),
            3,
            "the second device stops after its failed batch"
        );
        assert_eq!(
            failed, b_batches[2],
            "only the failed batch's requests fail"
        );
        assert!(b.ready(), "one device is still healthy");
        let a_before = served_a.lock().unwrap().len();
        for r in send_all(&b, 20).await {
            r.unwrap();
        }
        assert_eq!(
            *served_b.lock().unwrap(),
            b_batches,
            "the device that could not be rebuilt took more batches"
        );
        assert!(
            served_a.lock().unwrap().len() > a_before,
            "the survivor served the rest"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_client_is_never_held_for_the_window() {
        // A window of a whole second: the old fixed window made each of these wait for it.
        let (b, _w, batches) = start(settings(64, 1_000, 100), Duration::from_millis(2));
        let t = Instant::now();
        for i in 0..20 {
            let out = b.infer(vec![i as f32, 1.0], 1).await.unwrap();
            assert_eq!(out, vec![2.0 * i as f32, 2.0]);
        }
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "20 sequential requests took {:?}",
            t.elapsed()
        );
        assert!(batches.lock().unwrap().iter().all(|&rows| rows == 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn bursts_after_the_first_fill_their_batches() {
        // Closed-loop clients: each burst arrives while the backend is idle. Once the batcher has
        // seen the arrival gaps and compute time, it holds the batch open for the rest of the
        // burst instead of starting with the first request alone (which would split every burst
        // in two). One split in the last three bursts is allowed for a slow scheduler.
        let (b, _w, batches) = start(settings(16, 1_000, 100), Duration::from_millis(50));
        for _ in 0..4 {
            for r in send_all(&b, 16).await {
                r.unwrap();
            }
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 64);
        let first_burst = batches
            .iter()
            .scan(0, |sum, rows| {
                *sum += rows;
                Some(*sum)
            })
            .position(|sum| sum == 16)
            .expect("the first burst ends on a batch boundary");
        let later = batches.len() - first_burst - 1;
        assert!(
            later <= 4,
            "the last three bursts took {later} batches: {batches:?}"
        );
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
        // Enqueueing never waits: eight requests back to back, while the first batch computes for
        // 200 ms, find room for at most three (two queued, one taken by the worker).
        let outcomes: Vec<_> = (0..8).map(|_| b.enqueue(vec![1.0, 1.0], 1)).collect();
        let mut accepted = Vec::new();
        let mut refused = 0;
        for outcome in outcomes {
            match outcome {
                Ok(pending) => accepted.push(pending),
                Err(InferError::QueueFull { capacity: 2 }) => refused += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            (2..=3).contains(&accepted.len()) && refused == 8 - accepted.len(),
            "{} accepted, {refused} refused with capacity 2",
            accepted.len()
        );
        for pending in accepted {
            assert_eq!(pending.answer().await.unwrap(), vec![2.0, 2.0]);
        }
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
        let (b, worker, batches) = start(settings(2, 1, 100), Duration::from_millis(5));
        // Accepted while the batcher lives, answered after the last handle to it is gone: the
        // queue closes with requests still in it, and the worker must answer them all.
        let accepted: Vec<Pending<Vec<f32>>> = (0..20)
            .map(|i| b.enqueue(vec![i as f32, 2.0], 1).unwrap())
            .collect();
        let b = Arc::try_unwrap(b).unwrap_or_else(|_| panic!("another handle to the batcher"));
        drop(b);
        for (i, pending) in accepted.into_iter().enumerate() {
            assert_eq!(pending.answer().await.unwrap(), vec![2.0 * i as f32, 4.0]);
        }
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .unwrap();
        let rows: usize = batches.lock().unwrap().iter().sum();
        assert_eq!(rows, 20, "every queued request was computed");
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
