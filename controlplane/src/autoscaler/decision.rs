//! The autoscaler's decision for one pool, as a pure computation: no IO, and the clock is a
//! parameter.
//!
//! - The *recommendation* for a backlog is `clamp(ceil(backlog / tasks_per_replica), min, max)`.
//! - The *desired* replica count is stabilized like the HorizontalPodAutoscaler's `behavior`:
//!   it scales **up** only to the **lowest** recommendation made within the scale-up window (a
//!   burst must last the whole window to be followed; a window of zero follows at once), and
//!   **down** only to the **highest** recommendation made within the scale-down window (the pool
//!   shrinks only when every recommendation of the window was lower). Between the two limits the
//!   current count stays.
//! - A pool seen for the first time (at start, or by a new leader) counts its current replicas
//!   (clamped to its bounds) as a scale-down recommendation for one scale-down window, so a leader
//!   change never shrinks a pool before a full window of evidence.
//! - The result is always within `[min, max]`, whatever the current count is.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why a pool's settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("tasks per replica must be positive")]
    ZeroTasksPerReplica,
    #[error("the minimum ({min}) exceeds the maximum ({max})")]
    MinAboveMax { min: u32, max: u32 },
}

/// A pool's bounds and its target of tasks per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPolicy {
    min_replicas: u32,
    max_replicas: u32,
    tasks_per_replica: u32,
}

impl PoolPolicy {
    pub fn new(
        min_replicas: u32,
        max_replicas: u32,
        tasks_per_replica: u32,
    ) -> Result<Self, PolicyError> {
        if tasks_per_replica == 0 {
            return Err(PolicyError::ZeroTasksPerReplica);
        }
        if min_replicas > max_replicas {
            return Err(PolicyError::MinAboveMax {
                min: min_replicas,
                max: max_replicas,
            });
        }
        Ok(Self {
            min_replicas,
            max_replicas,
            tasks_per_replica,
        })
    }

    pub fn min_replicas(&self) -> u32 {
        self.min_replicas
    }

    pub fn max_replicas(&self) -> u32 {
        self.max_replicas
    }

    pub fn tasks_per_replica(&self) -> u32 {
        self.tasks_per_replica
    }

    /// `clamp(ceil(backlog / tasks_per_replica), min, max)`.
    pub fn recommended_replicas(&self, backlog: u64) -> u32 {
        let needed = backlog.div_ceil(u64::from(self.tasks_per_replica));
        u32::try_from(needed)
            .unwrap_or(u32::MAX)
            .clamp(self.min_replicas, self.max_replicas)
    }

    fn bound(&self, replicas: u32) -> u32 {
        replicas.clamp(self.min_replicas, self.max_replicas)
    }
}

/// How long recommendations count before the pool follows them (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StabilizationWindows {
    pub scale_up: Duration,
    pub scale_down: Duration,
}

/// Which way a decision moves a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// One decision: what the backlog alone asks for, and what the pool should run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub current: u32,
    /// `clamp(ceil(backlog / tasks_per_replica), min, max)` for this backlog.
    pub recommended: u32,
    /// The stabilized replica count the Deployment should have.
    pub desired: u32,
}

impl Decision {
    /// `None` when the pool keeps its size.
    pub fn direction(&self) -> Option<Direction> {
        match self.desired.cmp(&self.current) {
            std::cmp::Ordering::Greater => Some(Direction::Up),
            std::cmp::Ordering::Less => Some(Direction::Down),
            std::cmp::Ordering::Equal => None,
        }
    }
}

/// The recommendations of one pool within its windows.
#[derive(Debug, Clone)]
pub struct Stabilizer {
    windows: StabilizationWindows,
    recommendations: VecDeque<(Instant, u32)>,
    /// The replicas found when the pool was first seen, and when: a scale-down recommendation
    /// for one scale-down window.
    first_seen: Option<(Instant, u32)>,
}

impl Stabilizer {
    /// A pool first seen at `now` running `current_replicas`.
    pub fn new(
        windows: StabilizationWindows,
        policy: &PoolPolicy,
        now: Instant,
        current_replicas: u32,
    ) -> Self {
        Self {
            windows,
            recommendations: VecDeque::new(),
            first_seen: Some((now, policy.bound(current_replicas))),
        }
    }

    /// Records the recommendation for `backlog` at `now` and decides the pool's size.
    /// `now` must not go backwards between calls.
    pub fn decide(
        &mut self,
        now: Instant,
        policy: &PoolPolicy,
        backlog: u64,
        current: u32,
    ) -> Decision {
        let recommended = policy.recommended_replicas(backlog);
        self.recommendations.push_back((now, recommended));
        let longest = self.windows.scale_up.max(self.windows.scale_down);
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.saturating_duration_since(at) > longest {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        let within = |window: Duration| {
            self.recommendations
                .iter()
                .filter(move |(at, _)| now.saturating_duration_since(*at) <= window)
                .map(|&(_, replicas)| replicas)
        };
        // Both windows hold the recommendation just made, so up_limit <= recommended <= down_limit.
        let up_limit = within(self.windows.scale_up).min().unwrap_or(recommended);
        let mut down_limit = within(self.windows.scale_down).max().unwrap_or(recommended);
        if let Some((seen_at, replicas)) = self.first_seen {
            if now.saturating_duration_since(seen_at) < self.windows.scale_down {
                down_limit = down_limit.max(replicas);
            } else {
                self.first_seen = None;
            }
        }
        let desired = policy.bound(current.clamp(up_limit, down_limit));
        Decision {
            current,
            recommended,
            desired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy(min: u32, max: u32, tasks_per_replica: u32) -> PoolPolicy {
        PoolPolicy::new(min, max, tasks_per_replica).unwrap()
    }

    fn windows(up_seconds: u64, down_seconds: u64) -> StabilizationWindows {
        StabilizationWindows {
            scale_up: Duration::from_secs(up_seconds),
            scale_down: Duration::from_secs(down_seconds),
        }
    }

    #[test]
    fn the_recommendation_is_the_ceiling_of_backlog_per_replica() {
        let policy = policy(0, 100, 10);
        assert_eq!(policy.recommended_replicas(0), 0);
        assert_eq!(policy.recommended_replicas(1), 1);
        assert_eq!(policy.recommended_replicas(10), 1);
        assert_eq!(policy.recommended_replicas(11), 2);
        assert_eq!(policy.recommended_replicas(95), 10);
    }

    #[test]
    fn the_recommendation_is_clamped_to_min_and_max() {
        let policy = policy(2, 5, 4);
        assert_eq!(policy.recommended_replicas(0), 2);
        assert_eq!(policy.recommended_replicas(4), 2);
        assert_eq!(policy.recommended_replicas(12), 3);
        assert_eq!(policy.recommended_replicas(1_000), 5);
        assert_eq!(policy.recommended_replicas(u64::MAX), 5);
    }

    #[test]
    fn unusable_policies_are_rejected() {
        assert_eq!(
            PoolPolicy::new(1, 2, 0),
            Err(PolicyError::ZeroTasksPerReplica)
        );
        assert_eq!(
            PoolPolicy::new(3, 2, 1),
            Err(PolicyError::MinAboveMax { min: 3, max: 2 })
        );
    }

    #[test]
    fn without_windows_the_pool_follows_the_recommendation_at_once() {
        let policy = policy(1, 10, 5);
        let start = Instant::now();
        let mut stabilizer = Stabilizer::new(windows(0, 0), &policy, start, 1);
        let up = stabilizer.decide(start, &policy, 23, 1);
        assert_eq!((up.recommended, up.desired), (5, 5));
        assert_eq!(up.direction(), Some(Direction::Up));
        let down = stabilizer.decide(start + SECOND, &policy, 0, 5);
        assert_eq!((down.recommended, down.desired), (1, 1));
        assert_eq!(down.direction(), Some(Direction::Down));
    }

    #[test]
    fn scale_up_follows_the_lowest_recommendation_of_its_window() {
        let policy = policy(1, 10, 1);
        let start = Instant::now();
        let mut stabilizer = Stabilizer::new(windows(10, 0), &policy, start, 1);
        // Backlog 1 then a burst: the window still holds the recommendation of 1.
        assert_eq!(stabilizer.decide(start, &policy, 1, 1).desired, 1);
        let burst = stabilizer.decide(start + 3 * SECOND, &policy, 8, 1);
        assert_eq!((burst.recommended, burst.desired), (8, 1));
        // Within the window the lowest is now 6.
        assert_eq!(
            stabilizer
                .decide(start + 10 * SECOND, &policy, 6, 1)
                .desired,
            1
        );
        // The recommendation of 1 (at 0 s) left the window: the lowest of {8, 6, 7} is 6.
        let later = stabilizer.decide(start + 11 * SECOND, &policy, 7, 1);
        assert_eq!(later.desired, 6);
        assert_eq!(later.direction(), Some(Direction::Up));
    }

    #[test]
    fn scale_down_waits_for_a_whole_window_of_lower_recommendations() {
        let policy = policy(2, 10, 1);
        let start = Instant::now();
        let mut stabilizer = Stabilizer::new(windows(0, 30), &policy, start, 2);
        assert_eq!(stabilizer.decide(start, &policy, 9, 2).desired, 9);
        // The backlog drains: the 9 of t=0 holds the pool until it leaves the window.
        assert_eq!(stabilizer.decide(start + SECOND, &policy, 0, 9).desired, 9);
        assert_eq!(
            stabilizer
                .decide(start + 30 * SECOND, &policy, 0, 9)
                .desired,
            9
        );
        let shrunk = stabilizer.decide(start + 31 * SECOND, &policy, 0, 9);
        assert_eq!(shrunk.desired, 2, "down to min, never below");
        assert_eq!(shrunk.direction(), Some(Direction::Down));
    }

    #[test]
    fn scale_down_goes_to_the_highest_recommendation_left_in_the_window() {
        let policy = policy(0, 10, 1);
        let start = Instant::now();
        let mut stabilizer = Stabilizer::new(windows(0, 10), &policy, start, 0);
        stabilizer.decide(start, &policy, 8, 0);
        stabilizer.decide(start + 5 * SECOND, &policy, 4, 8);
        stabilizer.decide(start + 8 * SECOND, &policy, 0, 8);
        // At 11 s the 8 left; 4 (5 s) and 0 (8 s) remain.
        assert_eq!(
            stabilizer
                .decide(start + 11 * SECOND, &policy, 0, 8)
                .desired,
            4
        );
        assert_eq!(
            stabilizer
                .decide(start + 16 * SECOND, &policy, 0, 4)
                .desired,
            0
        );
    }

    #[test]
    fn a_pool_first_seen_is_not_shrunk_before_a_full_window() {
        let policy = policy(1, 10, 1);
        let start = Instant::now();
        let mut stabilizer = Stabilizer::new(windows(0, 60), &policy, start, 7);
        assert_eq!(stabilizer.decide(start, &policy, 0, 7).desired, 7);
        assert_eq!(
            stabilizer
                .decide(start + 59 * SECOND, &policy, 0, 7)
                .desired,
            7
        );
        assert_eq!(
            stabilizer
                .decide(start + 60 * SECOND, &policy, 0, 7)
                .desired,
            1
        );
        // Scaling up is not held back by it.
        let mut fresh = Stabilizer::new(windows(0, 60), &policy, start, 2);
        assert_eq!(fresh.decide(start, &policy, 9, 2).desired, 9);
    }

    #[test]
    fn a_pool_outside_its_bounds_is_brought_inside_at_once() {
        let policy = policy(2, 5, 1);
        let start = Instant::now();
        let mut above = Stabilizer::new(windows(30, 300), &policy, start, 20);
        assert_eq!(above.decide(start, &policy, 0, 20).desired, 5);
        let mut below = Stabilizer::new(windows(30, 300), &policy, start, 0);
        assert_eq!(below.decide(start, &policy, 0, 0).desired, 2);
    }

    #[test]
    fn between_the_limits_the_current_size_stays() {
        let policy = policy(0, 10, 1);
        let start = Instant::now();
        let mut stabilizer = Stabilizer::new(windows(10, 10), &policy, start, 0);
        stabilizer.decide(start, &policy, 3, 5);
        let decision = stabilizer.decide(start + SECOND, &policy, 7, 5);
        // Up limit min{3, 7} = 3, down limit max{3, 7} = 7: 5 is inside.
        assert_eq!(decision.desired, 5);
        assert_eq!(decision.direction(), None);
    }
}
