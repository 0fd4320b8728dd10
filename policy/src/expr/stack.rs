//! Running parsing and evaluation on threads with a large stack: the `cel` crate's parser and
//! interpreter recurse, and a deep expression must fail with a message, never overflow.

/// Why work could not run on a large-stack thread: never a panic of the caller, since a panic in
/// the provider would end the provider process under Terraform.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StackError {
    /// The system is out of threads or memory.
    #[error("cannot start a policy evaluation thread: {0}")]
    Spawn(String),
    /// The work panicked (a bug in the engine or the CEL interpreter).
    #[error("policy evaluation failed unexpectedly: {0}")]
    Panicked(String),
}

/// Stack size of evaluation threads: enough for the deepest expression the limits allow.
pub(crate) const STACK_SIZE: usize = 256 << 20;

/// Starts `f` on a thread of `scope` with a large stack.
pub fn spawn_large_stack<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>, StackError> {
    std::thread::Builder::new()
        .name("gpucap-policy".into())
        .stack_size(STACK_SIZE)
        .spawn_scoped(scope, f)
        .map_err(|e| StackError::Spawn(e.to_string()))
}

/// Waits for a thread of [`spawn_large_stack`]; its panic becomes an error.
pub fn join_large_stack<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T, StackError> {
    handle
        .join()
        .map_err(|panic| StackError::Panicked(panic_message(panic.as_ref())))
}

/// `f` of each of up to `threads` contiguous parts of `items`, in order, each computed on a thread
/// of its own with a large stack. Fails when a thread cannot be started, or one panics.
pub fn in_parts_on_large_stacks<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&[T]) -> R + Sync,
) -> Result<Vec<R>, StackError> {
    let threads = threads.clamp(1, items.len().max(1));
    let part = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles = items
            .chunks(part)
            .map(|chunk| spawn_large_stack(s, move || f(chunk)))
            .collect::<Result<Vec<_>, _>>()?;
        handles.into_iter().map(join_large_stack).collect()
    })
}

/// What a panic said, when it said it as text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Runs `f` on a thread with a large stack and waits for it.
pub fn on_large_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, StackError> {
    std::thread::scope(|s| join_large_stack(spawn_large_stack(s, f)?))
}
