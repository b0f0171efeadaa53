//! The open-model schedule: when each shopper arrives, fixed before the run
//! and independent of how fast the target answers.
//!
//! Arrival k (k = 1, 2, ...) is at the time t where the expected count so
//! far, the integral of the rate from the start, reaches k. So over any
//! phase the number of arrivals is the integral of its rate, rounded: the
//! rate holds exactly, whatever its shape.

use crate::scenario::{Phase, Shape};

pub struct Schedule {
    /// Each phase with its start time and the count before it.
    phases: Vec<(f64, f64, Phase)>,
    end_s: f64,
}

impl Schedule {
    pub fn new(phases: &[Phase]) -> Schedule {
        let mut start = 0.0;
        let mut before = 0.0;
        let mut out = Vec::with_capacity(phases.len());
        for p in phases {
            out.push((start, before, p.clone()));
            before += count_within(p, p.duration_s);
            start += p.duration_s;
        }
        Schedule {
            phases: out,
            end_s: start,
        }
    }

    pub fn end_s(&self) -> f64 {
        self.end_s
    }

    /// The phase running at `t` (the last one after the end).
    pub fn phase_at(&self, t: f64) -> usize {
        self.phases
            .iter()
            .rposition(|(start, ..)| *start <= t)
            .unwrap_or(0)
    }

    /// Arrivals per second at `t`.
    pub fn rate_at(&self, t: f64) -> f64 {
        let (start, _, p) = &self.phases[self.phase_at(t)];
        rate_within(p, t - start)
    }

    /// The expected number of arrivals from the start to `t`.
    pub fn count_to(&self, t: f64) -> f64 {
        let i = self.phase_at(t);
        let (start, before, p) = &self.phases[i];
        before + count_within(p, (t - start).min(p.duration_s))
    }

    /// Arrival times (seconds from the start) with their phase, in order.
    pub fn arrivals(&self) -> Arrivals<'_> {
        Arrivals {
            schedule: self,
            next_k: 1.0,
            t: 0.0,
            total: self.count_to(self.end_s),
        }
    }

    /// The time at which the count reaches `k`, searching from `from`.
    fn time_of(&self, k: f64, from: f64) -> f64 {
        // Newton from a first-order guess, kept inside a bisection bracket.
        let (mut lo, mut hi) = (from, self.end_s);
        let mut t = from;
        for _ in 0..64 {
            let gap = self.count_to(t) - k;
            if gap.abs() < 1e-9 {
                return t;
            }
            if gap < 0.0 {
                lo = t;
            } else {
                hi = t;
            }
            let r = self.rate_at(t);
            let newton = t - gap / r;
            t = if r > 1e-12 && newton > lo && newton < hi {
                newton
            } else {
                (lo + hi) / 2.0
            };
            if hi - lo < 1e-12 {
                return t;
            }
        }
        t
    }
}

pub struct Arrivals<'a> {
    schedule: &'a Schedule,
    next_k: f64,
    t: f64,
    total: f64,
}

impl Iterator for Arrivals<'_> {
    type Item = (f64, usize);

    fn next(&mut self) -> Option<(f64, usize)> {
        if self.next_k > self.total + 1e-9 {
            return None;
        }
        let t = self.schedule.time_of(self.next_k, self.t);
        self.t = t;
        self.next_k += 1.0;
        Some((t, self.schedule.phase_at(t)))
    }
}

fn rate_within(p: &Phase, t: f64) -> f64 {
    let to = p.to_rate.unwrap_or(p.rate);
    match p.shape {
        Shape::Constant => p.rate,
        Shape::Ramp => p.rate + (to - p.rate) * (t / p.duration_s).clamp(0.0, 1.0),
        Shape::Step => {
            if t < p.step_at_s.unwrap_or(0.0) {
                p.rate
            } else {
                to
            }
        }
        Shape::Decay => {
            let lambda = std::f64::consts::LN_2 / p.half_life_s.unwrap_or(1.0);
            to + (p.rate - to) * (-lambda * t).exp()
        }
    }
}

/// The integral of the phase's rate from its start to `t`.
fn count_within(p: &Phase, t: f64) -> f64 {
    let t = t.clamp(0.0, p.duration_s);
    let to = p.to_rate.unwrap_or(p.rate);
    match p.shape {
        Shape::Constant => p.rate * t,
        Shape::Ramp => p.rate * t + (to - p.rate) * t * t / (2.0 * p.duration_s),
        Shape::Step => {
            let at = p.step_at_s.unwrap_or(0.0);
            p.rate * t.min(at) + to * (t - at).max(0.0)
        }
        Shape::Decay => {
            let lambda = std::f64::consts::LN_2 / p.half_life_s.unwrap_or(1.0);
            to * t + (p.rate - to) * (1.0 - (-lambda * t).exp()) / lambda
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(shape: Shape, rate: f64, to: f64, secs: f64) -> Phase {
        Phase {
            name: format!("{shape:?}"),
            duration_s: secs,
            rate,
            shape,
            to_rate: Some(to),
            step_at_s: Some(secs / 4.0),
            half_life_s: Some(secs / 5.0),
        }
    }

    /// Arrivals counted inside each phase against the integral of its rate.
    #[test]
    fn every_shape_holds_its_rate_within_one_percent_over_a_phase() {
        let phases = vec![
            phase(Shape::Constant, 1_000.0, 0.0, 5.0),
            phase(Shape::Ramp, 200.0, 10_000.0, 1.0),
            phase(Shape::Step, 500.0, 5_000.0, 4.0),
            phase(Shape::Decay, 10_000.0, 500.0, 10.0),
            phase(Shape::Ramp, 3_000.0, 100.0, 3.0),
        ];
        let s = Schedule::new(&phases);
        let mut counts = vec![0u64; phases.len()];
        let mut last = 0.0;
        for (t, p) in s.arrivals() {
            assert!(t >= last, "arrivals in order");
            last = t;
            counts[p] += 1;
        }
        for (i, p) in phases.iter().enumerate() {
            let expected = count_within(p, p.duration_s);
            let got = counts[i] as f64;
            assert!(
                (got - expected).abs() <= (expected * 0.01).max(1.0),
                "{}: {got} arrivals, expected {expected:.1}",
                p.name
            );
        }
        // Within a phase too: the first second of the decay runs hotter
        // than its last, by the shape.
        let first: usize = s
            .arrivals()
            .filter(|(t, _)| (13.0..14.0).contains(t))
            .count();
        let last: usize = s
            .arrivals()
            .filter(|(t, _)| (22.0..23.0).contains(t))
            .count();
        let want_first = s.count_to(14.0) - s.count_to(13.0);
        assert!((first as f64 - want_first).abs() <= want_first * 0.01 + 1.0);
        assert!(first > 5 * last, "{first} vs {last}");
    }

    #[test]
    fn a_constant_rate_is_evenly_spaced() {
        let s = Schedule::new(&[phase(Shape::Constant, 100.0, 0.0, 1.0)]);
        let times: Vec<f64> = s.arrivals().map(|(t, _)| t).collect();
        assert_eq!(times.len(), 100);
        for (k, t) in times.iter().enumerate() {
            assert!((t - (k + 1) as f64 / 100.0).abs() < 1e-6, "{k}: {t}");
        }
    }
}
