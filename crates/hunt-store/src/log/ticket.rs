//! Tickets: how a producer learns where its records are, once they are durable.

use super::*;

/// Where a submission's records are: `first..=last`, consecutive. A submission of no
/// records has `first == last + 1`, `last` being the position before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: Lsn,
    pub last: Lsn,
}

impl Span {
    /// The position of the submission's `i`-th record.
    pub fn at(&self, i: usize) -> Lsn {
        self.first + i as Lsn
    }
}

pub(super) struct TicketState {
    pub(super) result: Option<Result<Span, LogError>>,
    /// Every task awaiting the ticket or one of its clones (a ticket shared by several
    /// answers is awaited by several tasks; each must be woken).
    pub(super) wakers: Vec<Waker>,
}

/// Where blocked producers wait: one condition for all of them, so that a commit wakes
/// every waiter with one broadcast instead of one wake-up per producer.
pub(super) struct Waiters {
    pub(super) lock: Mutex<()>,
    pub(super) cv: Condvar,
}

impl Waiters {
    /// Wakes every blocked producer; call after resolving tickets.
    pub(super) fn wake_all(&self) {
        drop(self.lock.lock());
        self.cv.notify_all();
    }
}

pub(super) struct TicketInner {
    pub(super) state: Mutex<TicketState>,
    pub(super) waiters: Arc<Waiters>,
}

/// A pending append: wait for it (threads) or await it (tasks). Resolves to where its
/// records are once they are durable.
#[derive(Clone)]
pub struct Ticket(Arc<TicketInner>);

impl Ticket {
    pub(super) fn new(waiters: Arc<Waiters>) -> Ticket {
        Ticket(Arc::new(TicketInner {
            state: Mutex::new(TicketState {
                result: None,
                wakers: Vec::new(),
            }),
            waiters,
        }))
    }

    /// Records the result and wakes an async waiter; blocked threads are woken by the
    /// caller's [`Waiters::wake_all`].
    pub(super) fn resolve(&self, r: Result<Span, LogError>) {
        let mut s = self.0.state.lock();
        if s.result.is_none() {
            s.result = Some(r);
        }
        for w in s.wakers.drain(..) {
            w.wake();
        }
    }

    pub(super) fn result(&self) -> Option<Result<Span, LogError>> {
        self.0.state.lock().result.clone()
    }

    /// Blocks until the records are durable (or the log failed).
    pub fn wait(&self) -> Result<Span, LogError> {
        // Checked under the waiters' lock: a result set before the broadcast is seen,
        // and a broadcast after the check wakes this wait.
        let n = &self.0.waiters;
        let mut g = n.lock.lock();
        loop {
            if let Some(r) = self.result() {
                return r;
            }
            n.cv.wait(&mut g);
        }
    }
}

impl Future for Ticket {
    type Output = Result<Span, LogError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.state.lock();
        match &s.result {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Tickets for a log written outside this crate (a replicated log): it makes a ticket
/// per submission and resolves it once, when the records are durable or refused.
pub struct Tickets {
    waiters: Arc<Waiters>,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets {
            waiters: Arc::new(Waiters {
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }),
        }
    }
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets")
    }
}

impl Tickets {
    /// A ticket not yet resolved.
    pub fn ticket(&self) -> Ticket {
        Ticket::new(self.waiters.clone())
    }

    /// Resolves `ticket` (the first result wins) and wakes whoever waits for it.
    pub fn resolve(&self, ticket: &Ticket, result: Result<Span, LogError>) {
        ticket.resolve(result);
        self.waiters.wake_all();
    }
}
