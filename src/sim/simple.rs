//! AWS EC2 Auto Scaling *simple scaling*, for the simulation baseline: a CloudWatch alarm on
//! one-minute datapoints of the group's average utilization; "3 of 3" above the high threshold
//! adds one instance, "15 of 15" below the low threshold removes one, and after any activity the
//! group waits out a 300 s cooldown before answering another alarm. While an alarm stays in
//! ALARM, Auto Scaling is invoked again every period (so the fleet keeps stepping by one).

use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq)]
pub struct SimpleParams {
    pub period_secs: i64,
    pub high: f64,
    pub low: f64,
    pub high_datapoints: usize,
    pub low_datapoints: usize,
    pub adjustment: u32,
    pub cooldown_secs: i64,
}

impl SimpleParams {
    pub fn defaults(high: f64, low: f64) -> Self {
        SimpleParams {
            period_secs: 60,
            high,
            low,
            high_datapoints: 3,
            low_datapoints: 15,
            adjustment: 1,
            cooldown_secs: 300,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimpleScaling {
    datapoints: VecDeque<Option<f64>>,
    cooldown_until: i64,
}

/// What the group does this period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Hold,
    Add(u32),
    Remove(u32),
}

impl SimpleScaling {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the period's datapoint (`None` = missing, which breaches nothing) at `now`.
    pub fn period(&mut self, p: &SimpleParams, now: i64, datapoint: Option<f64>) -> Step {
        self.datapoints.push_back(datapoint);
        while self.datapoints.len() > p.high_datapoints.max(p.low_datapoints) {
            self.datapoints.pop_front();
        }
        let last = |n: usize, f: &dyn Fn(f64) -> bool| {
            self.datapoints.len() >= n
                && self
                    .datapoints
                    .iter()
                    .rev()
                    .take(n)
                    .all(|d| d.is_some_and(f))
        };
        let high = last(p.high_datapoints, &|v| v > p.high);
        let low = last(p.low_datapoints, &|v| v < p.low);
        if now < self.cooldown_until {
            return Step::Hold;
        }
        let step = if high {
            Step::Add(p.adjustment)
        } else if low {
            Step::Remove(p.adjustment)
        } else {
            Step::Hold
        };
        if step != Step::Hold {
            self.cooldown_until = now + p.cooldown_secs;
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_of_three_then_cooldown() {
        let p = SimpleParams::defaults(0.8, 0.3);
        let mut s = SimpleScaling::new();
        assert_eq!(s.period(&p, 0, Some(0.9)), Step::Hold);
        assert_eq!(s.period(&p, 60, Some(0.9)), Step::Hold);
        assert_eq!(s.period(&p, 120, Some(0.9)), Step::Add(1));
        // Still in ALARM, but cooling down for 300 s.
        for t in [180, 240, 300, 360] {
            assert_eq!(s.period(&p, t, Some(0.9)), Step::Hold, "t={t}");
        }
        assert_eq!(s.period(&p, 420, Some(0.9)), Step::Add(1));
    }

    #[test]
    fn fifteen_of_fifteen_to_scale_in_and_missing_breaks_the_run() {
        let p = SimpleParams::defaults(0.8, 0.3);
        let mut s = SimpleScaling::new();
        for i in 0..14 {
            assert_eq!(s.period(&p, i * 60, Some(0.1)), Step::Hold);
        }
        assert_eq!(s.period(&p, 14 * 60, Some(0.1)), Step::Remove(1));
        let mut s = SimpleScaling::new();
        for i in 0..20 {
            let d = if i == 10 { None } else { Some(0.1) };
            let step = s.period(&p, i * 60, d);
            assert!(i >= 25 || step == Step::Hold, "i={i}");
        }
    }
}
