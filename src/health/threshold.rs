//! The fall/rise state machine of one check: which probe results move a real server between
//! Healthy and Unhealthy. Pure (no clock, no I/O) so every sequence of results can be tested as a
//! list; the prober in `engine` feeds it and stamps the time of each transition.

use super::Health;

/// Consecutive-result counting with hysteresis, as keepalived's `retry`/`success` and Kubernetes'
/// `failureThreshold`/`successThreshold`: a server must fail `fall` times in a row to leave, and
/// pass `rise` times in a row to come back, so one lost probe never flaps a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    health: Health,
    fall: u32,
    rise: u32,
    /// Failures in a row while Healthy.
    failures: u32,
    /// Passes in a row while Unhealthy.
    successes: u32,
}

/// A change of state, with what caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition<F> {
    /// `failures` probes in a row failed; `reason` is the last one's.
    Unhealthy { reason: F, failures: u32 },
    /// `successes` probes in a row passed.
    Healthy { successes: u32 },
}

impl Tracker {
    /// Starts Healthy: a newly added real server keeps its weight until the checks say otherwise,
    /// as keepalived does. A threshold of 0 would mean "change without evidence"; it counts as 1.
    pub fn new(fall: u32, rise: u32) -> Self {
        Self {
            health: Health::Healthy,
            fall: fall.max(1),
            rise: rise.max(1),
            failures: 0,
            successes: 0,
        }
    }

    /// Starts in `health`: Unhealthy for a real server a previous run of the agent had ejected,
    /// so it needs `rise` passes before it gets traffic again.
    pub fn starting(health: Health, fall: u32, rise: u32) -> Self {
        Self {
            health,
            ..Self::new(fall, rise)
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Counts one probe result; returns the transition it completes, if any.
    pub fn observe<F>(&mut self, result: Result<(), F>) -> Option<Transition<F>> {
        match (self.health, result) {
            (Health::Healthy, Ok(())) => {
                self.failures = 0;
                None
            }
            (Health::Healthy, Err(reason)) => {
                self.failures += 1;
                (self.failures >= self.fall).then(|| {
                    let failures = std::mem::take(&mut self.failures);
                    self.health = Health::Unhealthy;
                    Transition::Unhealthy { reason, failures }
                })
            }
            (Health::Unhealthy, Err(_)) => {
                self.successes = 0;
                None
            }
            (Health::Unhealthy, Ok(())) => {
                self.successes += 1;
                (self.successes >= self.rise).then(|| {
                    let successes = std::mem::take(&mut self.successes);
                    self.health = Health::Healthy;
                    Transition::Healthy { successes }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tracker: &mut Tracker, results: &str) -> Vec<Transition<usize>> {
        // '+' is a pass, '-' a failure whose reason is its position, so a test can tell which
        // failure a transition blames.
        results
            .chars()
            .enumerate()
            .filter_map(|(i, c)| tracker.observe(if c == '+' { Ok(()) } else { Err(i) }))
            .collect()
    }

    #[test]
    fn a_new_check_starts_healthy() {
        assert_eq!(Tracker::new(3, 2).health(), Health::Healthy);
    }

    #[test]
    fn fall_failures_in_a_row_eject_and_blame_the_last_one() {
        let mut t = Tracker::new(3, 2);
        assert_eq!(run(&mut t, "--"), vec![]);
        assert_eq!(t.health(), Health::Healthy);
        assert_eq!(
            run(&mut t, "-"),
            vec![Transition::Unhealthy {
                reason: 0,
                failures: 3
            }]
        );
        assert_eq!(t.health(), Health::Unhealthy);
    }

    #[test]
    fn rise_passes_in_a_row_readmit() {
        let mut t = Tracker::new(1, 3);
        run(&mut t, "-");
        assert_eq!(run(&mut t, "++"), vec![]);
        assert_eq!(t.health(), Health::Unhealthy);
        assert_eq!(run(&mut t, "+"), vec![Transition::Healthy { successes: 3 }]);
        assert_eq!(t.health(), Health::Healthy);
    }

    #[test]
    fn a_pass_while_healthy_resets_the_failure_count() {
        let mut t = Tracker::new(3, 1);
        assert_eq!(run(&mut t, "--+--+--"), vec![]);
        assert_eq!(t.health(), Health::Healthy);
    }

    #[test]
    fn a_failure_while_unhealthy_resets_the_success_count() {
        let mut t = Tracker::new(1, 3);
        run(&mut t, "-");
        assert_eq!(run(&mut t, "++-++-++"), vec![]);
        assert_eq!(t.health(), Health::Unhealthy);
    }

    #[test]
    fn a_server_alternating_pass_and_fail_never_changes_state_at_thresholds_of_two() {
        let mut healthy = Tracker::new(2, 2);
        assert_eq!(run(&mut healthy, &"-+".repeat(50)), vec![]);
        assert_eq!(healthy.health(), Health::Healthy);

        let mut unhealthy = Tracker::new(2, 2);
        run(&mut unhealthy, "--");
        assert_eq!(run(&mut unhealthy, &"+-".repeat(50)), vec![]);
        assert_eq!(unhealthy.health(), Health::Unhealthy);
    }

    #[test]
    fn counting_starts_afresh_after_each_transition() {
        let mut t = Tracker::new(2, 2);
        let transitions = run(&mut t, "--++--");
        assert_eq!(
            transitions,
            vec![
                Transition::Unhealthy {
                    reason: 1,
                    failures: 2
                },
                Transition::Healthy { successes: 2 },
                Transition::Unhealthy {
                    reason: 5,
                    failures: 2
                },
            ]
        );
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let mut t = Tracker::new(0, 0);
        assert_eq!(
            run(&mut t, "-+"),
            vec![
                Transition::Unhealthy {
                    reason: 0,
                    failures: 1
                },
                Transition::Healthy { successes: 1 },
            ]
        );
    }
}
