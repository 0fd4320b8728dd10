//! Predictive pre-warming: the load's daily and weekly shape, learned from what the router has
//! seen, so burst replicas can be started a cold start *before* a recurring rise instead of after
//! queues have grown.
//!
//! The day is cut into five-minute slots. When a slot ends, its mean request rate is kept for
//! that time of day (the last two days) and that time of the week (an exponentially weighted mean
//! over weeks). A prediction for a moment takes the weekly value when a week has been seen
//! (Mondays differ from Sundays), else the lower of the last two days: a rise seen on both is
//! recurring, a one-off burst yesterday is not worth paying for today. Nothing is predicted
//! before two days have been seen for the slot.
//!
//! Rates become replica counts through what one replica carries at the scale-up threshold, as
//! measured by the autoscaler while replicas are busy, so the prediction needs no model of the
//! hardware. Everything here is pure: the wall-clock time comes in with each observation, virtual
//! in simulations.

use std::time::Duration;

/// Width of a slot.
pub const SLOT: Duration = Duration::from_secs(300);
const SLOTS_PER_DAY: usize = 24 * 12;
const SLOTS_PER_WEEK: usize = 7 * SLOTS_PER_DAY;
/// Weight of the newest day in a slot's mean.
const NEWEST_WEIGHT: f64 = 0.5;
/// 1970-01-01, where wall-clock time starts, was a Thursday: three days after a Monday.
const EPOCH_WEEKDAY_FROM_MONDAY: usize = 3;

/// What has been learned about the load.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadShape {
    /// Per slot of the day: the latest day's mean rate and the day before's.
    daily: Vec<[Option<f64>; 2]>,
    weekly: Vec<Option<f64>>,
    /// The slot being measured (its absolute index) and the rates seen in it.
    current: Option<(u64, f64, u32)>,
    /// Requests per second one serving replica carried while a scale-up signal was high.
    per_replica: Option<f64>,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            daily: vec![[None; 2]; SLOTS_PER_DAY],
            weekly: vec![None; SLOTS_PER_WEEK],
            current: None,
            per_replica: None,
        }
    }
}

impl LoadShape {
    /// Whether it has the shape this build learns (a day's and a week's slots, finite rates): a
    /// file from another build, or a damaged one, is not used.
    pub fn is_well_formed(&self) -> bool {
        let fine = |v: &Option<f64>| v.is_none_or(|x| x.is_finite() && x >= 0.0);
        self.daily.len() == SLOTS_PER_DAY
            && self.weekly.len() == SLOTS_PER_WEEK
            && self.daily.iter().flatten().all(fine)
            && self.weekly.iter().all(fine)
            && fine(&self.per_replica)
    }
}

/// What the shape predicts for the coming minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The highest request rate expected in the horizon, per second.
    pub rate: f64,
    /// Replicas that carry it.
    pub replicas: usize,
    /// What one replica carries, per second.
    pub per_replica: f64,
}

fn slot_of(wall: Duration) -> u64 {
    wall.as_secs() / SLOT.as_secs()
}

fn day_slot(slot: u64) -> usize {
    (slot % SLOTS_PER_DAY as u64) as usize
}

fn week_slot(slot: u64) -> usize {
    ((slot + (EPOCH_WEEKDAY_FROM_MONDAY * SLOTS_PER_DAY) as u64) % SLOTS_PER_WEEK as u64) as usize
}

fn fold(old: Option<f64>, new: f64) -> Option<f64> {
    Some(match old {
        Some(o) => o + NEWEST_WEIGHT * (new - o),
        None => new,
    })
}

impl LoadShape {
    /// Takes one observation at wall-clock time `wall`: the request rate, and — when the
    /// replicas were busy enough to tell — what one replica carries at the scale-up threshold.
    pub fn observe(&mut self, wall: Duration, rate: f64, per_replica: Option<f64>) {
        let slot = slot_of(wall);
        match &mut self.current {
            Some((s, sum, n)) if *s == slot => {
                *sum += rate;
                *n += 1;
            }
            current => {
                if let Some((done, sum, n)) = current.take()
                    && n > 0
                {
                    let mean = sum / f64::from(n);
                    let day = &mut self.daily[day_slot(done)];
                    *day = [Some(mean), day[0]];
                    self.weekly[week_slot(done)] = fold(self.weekly[week_slot(done)], mean);
                }
                *current = Some((slot, rate, 1));
            }
        }
        if let Some(carried) = per_replica.filter(|c| c.is_finite() && *c > 0.0) {
            self.per_replica = fold(self.per_replica, carried);
        }
    }

    /// The expected rate at a moment: a week ago's, else the lower of the last two days'.
    fn expected_at(&self, slot: u64) -> Option<f64> {
        let weekly = self.weekly[week_slot(slot)];
        match self.daily[day_slot(slot)] {
            _ if weekly.is_some() => weekly,
            [Some(a), Some(b)] => Some(a.min(b)),
            _ => None,
        }
    }

    /// The forecast for the slots after now up to `horizon` ahead; `None` until a rate and a
    /// replica's capacity have both been learned.
    pub fn forecast(&self, wall: Duration, horizon: Duration) -> Option<Forecast> {
        let per_replica = self.per_replica.filter(|r| *r > 0.0)?;
        let now = slot_of(wall);
        let last = slot_of(wall + horizon);
        let rate = (now + 1..=last.max(now + 1))
            .filter_map(|s| self.expected_at(s))
            .reduce(f64::max)?;
        Some(Forecast {
            rate,
            replicas: (rate / per_replica).ceil() as usize,
            per_replica,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    /// Feeds a day's worth of one observation per minute with `rate(second_of_day)`; replicas
    /// carry 100 req/s each.
    fn feed_day(shape: &mut LoadShape, day: u64, rate: impl Fn(u64) -> f64) {
        for minute in 0..24 * 60 {
            let second = minute * 60;
            shape.observe(
                Duration::from_secs(day * DAY + second),
                rate(second),
                Some(100.0),
            );
        }
    }

    #[test]
    fn two_days_are_learned_then_the_morning_rise_is_predicted_but_not_a_one_off_burst() {
        // Quiet until 09:00, then 800 req/s; on day one only, a burst at 06:00.
        let rate = |day: u64| {
            move |s: u64| {
                if s >= 9 * 3600 {
                    800.0
                } else if day == 0 && (6 * 3600..6 * 3600 + 900).contains(&s) {
                    1500.0
                } else {
                    80.0
                }
            }
        };
        let mut shape = LoadShape::default();
        let horizon = Duration::from_secs(180);
        feed_day(&mut shape, 0, rate(0));
        assert_eq!(
            shape.forecast(Duration::from_secs(DAY + 8 * 3600 + 58 * 60), horizon),
            None,
            "one day is not a pattern"
        );
        feed_day(&mut shape, 1, rate(1));
        // Day three, 08:58: the rise at 09:00 is within three minutes.
        let f = shape
            .forecast(Duration::from_secs(2 * DAY + 8 * 3600 + 58 * 60), horizon)
            .expect("a forecast after two days");
        assert_eq!(f.rate, 800.0);
        assert_eq!(f.replicas, 8);
        // 05:58: day one's burst did not recur on day two.
        let quiet = shape
            .forecast(Duration::from_secs(2 * DAY + 5 * 3600 + 58 * 60), horizon)
            .unwrap();
        assert_eq!(quiet.replicas, 1);
    }

    #[test]
    fn weekly_profiles_tell_weekdays_from_weekends_once_a_week_is_seen() {
        let mut shape = LoadShape::default();
        // 1970-01-05 was a Monday: day 4 since the epoch. Weekdays busy, weekends quiet.
        for day in 4..11 {
            let weekend = (day - 4) % 7 >= 5;
            feed_day(&mut shape, day, |_| if weekend { 100.0 } else { 1000.0 });
        }
        let horizon = Duration::from_secs(600);
        // Saturday of week two, noon: the weekly profile says quiet though the daily mean is high.
        let saturday = shape
            .forecast(Duration::from_secs((11 + 5) * DAY + 12 * 3600), horizon)
            .unwrap();
        assert_eq!(saturday.rate, 100.0);
        let monday = shape
            .forecast(Duration::from_secs(11 * DAY + 12 * 3600), horizon)
            .unwrap();
        assert_eq!(monday.rate, 1000.0);
    }

    #[test]
    fn a_changed_pattern_takes_over_within_two_days() {
        let mut shape = LoadShape::default();
        feed_day(&mut shape, 0, |_| 1000.0);
        feed_day(&mut shape, 1, |_| 1000.0);
        feed_day(&mut shape, 2, |_| 200.0);
        let next = |shape: &LoadShape, day: u64| {
            shape
                .forecast(
                    Duration::from_secs(day * DAY + 3600),
                    Duration::from_secs(300),
                )
                .unwrap()
                .rate
        };
        // The lower of the last two days: the drop counts at once, a rise once it repeats.
        assert_eq!(next(&shape, 3), 200.0);
        feed_day(&mut shape, 3, |_| 1000.0);
        assert_eq!(next(&shape, 4), 200.0);
        feed_day(&mut shape, 4, |_| 1000.0);
        assert_eq!(next(&shape, 5), 1000.0);
    }
}
