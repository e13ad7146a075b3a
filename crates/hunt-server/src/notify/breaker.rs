//! A circuit breaker per destination: closed → open after `failures_to_open` failures
//! in a row → after `open_for`, half-open: one probe goes out → closed if it succeeds,
//! open again if not. While open (or while the probe is out), deliveries wait without
//! spending attempts. Time is an input, so the rules are tested without sleeping.

use std::time::{Duration, Instant};

/// How a breaker trips and recovers.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures_to_open: u32,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// The state, as metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// For the `…_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// What a delivery may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send.
    Send,
    /// Send: it is the probe of a half-open breaker.
    Probe,
    /// Do not send; ask again at this time (no attempt is spent).
    WaitUntil(Instant),
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    failures: u32,
    /// Open: until when. Half-open: when the probe went out.
    since: Option<Instant>,
    probe_out: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed,
            failures: 0,
            since: None,
            probe_out: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a delivery go out at `now`?
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            State::Closed => Permit::Send,
            State::Open => {
                let until = self.since.unwrap_or(now);
                if now < until {
                    return Permit::WaitUntil(until);
                }
                self.state = State::HalfOpen;
                self.probe_out = true;
                Permit::Probe
            }
            State::HalfOpen if self.probe_out => {
                // One probe at a time; look again a little later.
                Permit::WaitUntil(now + self.config.open_for.min(Duration::from_secs(1)))
            }
            State::HalfOpen => {
                self.probe_out = true;
                Permit::Probe
            }
        }
    }

    /// A delivery succeeded.
    pub fn success(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
        self.since = None;
        self.probe_out = false;
    }

    /// A delivery failed at `now` (error, timeout or a 5xx/429 answer).
    pub fn failure(&mut self, now: Instant) {
        match self.state {
            State::HalfOpen => self.open(now),
            State::Closed => {
                self.failures += 1;
                if self.failures >= self.config.failures_to_open {
                    self.open(now);
                }
            }
            State::Open => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.since = Some(now + self.config.open_for);
        self.probe_out = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_probes_then_closes() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut b = Breaker::new(BreakerConfig {
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
        });
        assert_eq!(b.permit(s(0)), Permit::Send);
        b.failure(s(0));
        b.failure(s(1));
        assert_eq!(b.state(), State::Closed, "two failures do not open it");
        b.success();
        b.failure(s(2));
        b.failure(s(2));
        assert_eq!(b.state(), State::Closed, "failures count in a row");
        b.failure(s(3));
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            b.permit(s(5)),
            Permit::WaitUntil(s(13)),
            "waits, spending nothing"
        );
        assert_eq!(b.permit(s(13)), Permit::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert!(
            matches!(b.permit(s(13)), Permit::WaitUntil(_)),
            "one probe at a time"
        );
        b.failure(s(14));
        assert_eq!(b.state(), State::Open, "a failed probe opens it again");
        assert_eq!(b.permit(s(20)), Permit::WaitUntil(s(24)));
        assert_eq!(b.permit(s(24)), Permit::Probe);
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.permit(s(24)), Permit::Send);
    }
}
