//! A group of loops, one per thread (muduo's `EventLoopThreadPool`).

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rouse_poll::{Backend, Poller};

use crate::{Error, EventLoop, LoopHandle};

/// What runs on each loop's thread before its loop runs: given the loop's
/// index and the loop, it may register sources and timers.
type Init = Arc<dyn Fn(usize, &mut EventLoop) -> io::Result<()> + Send + Sync>;

/// `n` event loops, each on a thread of its own with its own poller, for a
/// server that outgrows one core.
///
/// Work reaches a loop through its [`LoopHandle`]: [`next`](LoopGroup::next)
/// picks one round-robin (muduo's `getNextLoop`), [`get`](LoopGroup::get)
/// a given one. A burst of functors sent to a busy loop shares one wake, as
/// with any handle.
///
/// [`shutdown`](LoopGroup::shutdown) quits every loop and joins every
/// thread; dropping the group does the same. A quit ends a loop after its
/// current iteration: functors still queued then are dropped (their
/// destructors run) on the loop's thread, not run. A panic on a loop's
/// thread makes the other loops quit too, and reaches whoever shuts the
/// group down (or waits for it with [`join`](LoopGroup::join)) with its
/// payload unchanged.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use rouse_loop::LoopGroup;
///
/// let group = LoopGroup::builder(2).name("worker").build()?;
/// let (tx, rx) = mpsc::channel();
/// for i in 0..10 {
///     let tx = tx.clone();
///     group.next().queue_in_loop(move |_| {
///         let me = std::thread::current().name().unwrap().to_string();
///         tx.send((i, me)).unwrap();
///     })?;
/// }
/// let mut done: Vec<_> = rx.iter().take(10).collect();
/// done.sort();
/// assert_eq!(done[0], (0, "worker-0".to_string()));
/// assert_eq!(done[1], (1, "worker-1".to_string()));
/// // Quits every loop and joins every thread.
/// for outcome in group.shutdown() {
///     outcome?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LoopGroup {
    handles: Vec<LoopHandle>,
    threads: Vec<Option<JoinHandle<io::Result<()>>>>,
    next: AtomicUsize,
}

/// Options for a [`LoopGroup`].
#[derive(Clone)]
pub struct LoopGroupBuilder {
    loops: usize,
    backend: Option<Backend>,
    cpus: Option<Vec<usize>>,
    name: String,
    init: Option<Init>,
}

impl fmt::Debug for LoopGroupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopGroupBuilder")
            .field("loops", &self.loops)
            .field("backend", &self.backend)
            .field("cpus", &self.cpus)
            .field("name", &self.name)
            .field("init", &self.init.is_some())
            .finish()
    }
}

impl LoopGroupBuilder {
    /// Each loop on this backend (default: [`Poller::new`]'s).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Pins loop `i` to CPU `cpus[i % cpus.len()]`.
    pub fn pin_to(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Pins loop `i` to CPU `i` (modulo the CPUs this process may use).
    pub fn pin_each(self) -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.pin_to(0..n)
    }

    /// Names the threads `NAME-0`, `NAME-1`, … (default `rouse-loop`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs `init(index, loop)` on each loop's thread before the loop runs
    /// (muduo's `ThreadInitCallback`): register sources and timers there.
    /// An error fails the whole start.
    pub fn on_start(
        mut self,
        init: impl Fn(usize, &mut EventLoop) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.init = Some(Arc::new(init));
        self
    }

    /// Starts the loops, and returns once every one has been made and
    /// initialised and is about to run.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::InvalidInput`] for a group of no loops, or an
    ///   empty CPU list;
    /// * the first error of a loop that could not start (no descriptors
    ///   left, a thread that cannot be spawned, an init that failed, a CPU
    ///   that cannot be had): the loops already started are stopped and
    ///   joined first.
    pub fn build(self) -> Result<LoopGroup, Error> {
        if self.loops == 0 {
            return Err(invalid("a loop group needs at least one loop"));
        }
        if self.cpus.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid("pin_to: no CPUs given"));
        }
        let mut group = LoopGroup {
            handles: Vec::with_capacity(self.loops),
            threads: Vec::with_capacity(self.loops),
            next: AtomicUsize::new(0),
        };
        // Every loop's thread learns of every other loop only once all have
        // started, to quit them if it panics.
        let (peers_tx, peers_rx): (Vec<_>, Vec<_>) = (0..self.loops)
            .map(|_| mpsc::channel::<Vec<LoopHandle>>())
            .unzip();
        for (index, peers) in peers_rx.into_iter().enumerate() {
            match self.start(index, peers) {
                Ok((handle, thread)) => {
                    group.handles.push(handle);
                    group.threads.push(Some(thread));
                }
                Err(e) => {
                    // Those started are stopped (dropping the group), and
                    // their outcomes are not this error's concern.
                    drop(peers_tx);
                    let _ = group.stop();
                    return Err(e);
                }
            }
        }
        for tx in peers_tx {
            // A loop whose thread has already ended needs no peers.
            let _ = tx.send(group.handles.clone());
        }
        Ok(group)
    }

    /// Starts loop `index` on a thread of its own; returns its handle once
    /// it is about to run.
    fn start(
        &self,
        index: usize,
        peers: mpsc::Receiver<Vec<LoopHandle>>,
    ) -> Result<(LoopHandle, JoinHandle<io::Result<()>>), Error> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<LoopHandle>>();
        let backend = self.backend;
        let cpu = self.cpus.as_ref().map(|c| c[index % c.len()]);
        let init = self.init.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-{index}", self.name))
            .spawn(move || -> io::Result<()> {
                let made = (|| -> io::Result<EventLoop> {
                    if let Some(cpu) = cpu {
                        pin(cpu)?;
                    }
                    let poller = match backend {
                        Some(b) => Poller::with_backend(b)?,
                        None => Poller::new()?,
                    };
                    let mut lp = EventLoop::with_poller(poller)?;
                    if let Some(init) = &init {
                        init(index, &mut lp)?;
                    }
                    Ok(lp)
                })();
                let mut lp = match made {
                    Ok(lp) => lp,
                    Err(e) => {
                        let kind = e.kind();
                        let _ = ready_tx.send(Err(e));
                        return Err(io::Error::new(kind, "the loop did not start"));
                    }
                };
                let _ = ready_tx.send(Ok(lp.handle()));
                drop(ready_tx);
                let peers = peers.recv().unwrap_or_default();
                let outcome = catch_unwind(AssertUnwindSafe(|| lp.run()));
                if outcome.is_err() {
                    // Do not leave the others running for a group that
                    // will only learn of this at its join.
                    for (i, peer) in peers.iter().enumerate() {
                        if i != index {
                            let _ = peer.quit();
                        }
                    }
                }
                // The loop (and whatever is still queued on it) is dropped
                // here, on its thread, before the panic goes on.
                drop(lp);
                match outcome {
                    Ok(result) => result,
                    Err(payload) => resume_unwind(payload),
                }
            })
            .map_err(Error::Io)?;
        match ready_rx.recv() {
            Ok(Ok(handle)) => Ok((handle, thread)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(Error::Io(e))
            }
            // The thread panicked in `init`: its payload goes on here.
            Err(_) => match thread.join() {
                Err(payload) => resume_unwind(payload),
                Ok(r) => Err(Error::Io(r.err().unwrap_or_else(|| {
                    io::Error::other("a loop thread ended before it started")
                }))),
            },
        }
    }
}

fn pin(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond what can be pinned"),
        ));
    }
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot pin a loop to CPU {cpu}: {e}")))
}

fn invalid(why: &str) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, why.to_string()))
}

impl LoopGroup {
    /// Starts `loops` loops with the default options.
    ///
    /// # Errors
    ///
    /// As [`LoopGroupBuilder::build`].
    pub fn new(loops: usize) -> Result<LoopGroup, Error> {
        LoopGroup::builder(loops).build()
    }

    /// Options for a group of `loops` loops.
    pub fn builder(loops: usize) -> LoopGroupBuilder {
        LoopGroupBuilder {
            loops,
            backend: None,
            cpus: None,
            name: "rouse-loop".into(),
            init: None,
        }
    }

    /// The handle of the next loop, round-robin.
    pub fn next(&self) -> &LoopHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// The handle of loop `index`.
    pub fn get(&self, index: usize) -> Option<&LoopHandle> {
        self.handles.get(index)
    }

    /// The handles of every loop, in order.
    pub fn handles(&self) -> &[LoopHandle] {
        &self.handles
    }

    /// The number of loops.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether the group has no loops (never, once built).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Quits every loop, joins every thread, and returns each loop's
    /// outcome, in order.
    ///
    /// # Panics
    ///
    /// With the payload of a loop whose thread panicked (the first, if
    /// several did), once every thread has been joined.
    pub fn shutdown(mut self) -> Vec<io::Result<()>> {
        self.stop()
    }

    /// Waits until every loop has ended (by a quit sent through its
    /// handle, say), and returns each loop's outcome, in order.
    ///
    /// # Panics
    ///
    /// As [`shutdown`](LoopGroup::shutdown).
    pub fn join(mut self) -> Vec<io::Result<()>> {
        self.join_all()
    }

    fn stop(&mut self) -> Vec<io::Result<()>> {
        for h in &self.handles {
            // A loop that already ended answers LoopGone: nothing to quit.
            let _ = h.quit();
        }
        self.join_all()
    }

    fn join_all(&mut self) -> Vec<io::Result<()>> {
        let mut outcomes = Vec::with_capacity(self.threads.len());
        let mut panic = None;
        for t in &mut self.threads {
            let Some(t) = t.take() else { continue };
            match t.join() {
                Ok(r) => outcomes.push(r),
                Err(payload) => {
                    outcomes.push(Err(io::Error::other("the loop's thread panicked")));
                    panic.get_or_insert(payload);
                }
            }
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        outcomes
    }
}

impl Drop for LoopGroup {
    /// Quits and joins every loop. A loop's panic goes on from here, unless
    /// this thread is already unwinding.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for h in &self.handles {
                let _ = h.quit();
            }
            for t in &mut self.threads {
                if let Some(t) = t.take() {
                    let _ = t.join();
                }
            }
        } else {
            let _ = self.stop();
        }
    }
}

impl fmt::Debug for LoopGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopGroup")
            .field("loops", &self.handles.len())
            .finish_non_exhaustive()
    }
}
