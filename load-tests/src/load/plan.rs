//! What a load run will send, decided before it starts: one entry per event, in send order.
//!
//! Events get sequential ids (`<tag>-<seq>`), so the incident an event opens (`inc-<tag>-<seq>`)
//! and the event an `attached` change names lead straight back to the entry, with no lookup
//! table. Phases are contiguous ranges of sequence numbers (warm-up, then one per step).

use crate::city::City;
use crate::residents::LABELS;
use helpgrid_common::time::{Millis, to_timestamp};
use helpgrid_proto::SCHEMA_VERSION;
use helpgrid_proto::pb::{
    ButtonPress, CameraAlert, CameraLabel, Envelope, HelpEvent, PressKind, help_event,
};
use std::collections::VecDeque;
use std::ops::Range;

/// One planned event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Planned {
    /// A household presses (for the first time in this run, or again).
    Press {
        grid: u32,
        household: u32,
        kind: PressKind,
        repeat: bool,
    },
    /// A camera detection; under the router's threshold it must open nothing.
    Camera {
        grid: u32,
        camera: u32,
        label: CameraLabel,
        confidence: f32,
    },
}

impl Planned {
    /// Whether the router must account for it (open an incident or attach it).
    pub fn must_be_accounted(&self, min_confidence: f32) -> bool {
        match self {
            Planned::Press { .. } => true,
            Planned::Camera { confidence, .. } => *confidence >= min_confidence,
        }
    }
}

/// A named phase: a range of sequence numbers sent at one rate (None = as fast as possible).
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub range: Range<u64>,
    pub rate: Option<f64>,
    /// Left out of the latency figures (the warm-up).
    pub warm_up: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub tag: String,
    pub events: Vec<Planned>,
    pub phases: Vec<Phase>,
}

/// Knobs for the mix of events.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub repeat_ratio: f64,
    pub camera_ratio: f64,
    pub urgent_ratio: f64,
    pub medical_ratio: f64,
    /// Share of camera detections under the router's confidence threshold.
    pub low_confidence_ratio: f64,
}

/// Draws events for a city: presses from random households (some repeating a recent
/// press), and camera detections.
pub struct Drawer<'a> {
    city: &'a City,
    mix: Mix,
    rng: fastrand::Rng,
    recent: VecDeque<(u32, u32)>,
    /// Households not yet pressed, for floods where every household presses once.
    unpressed: Option<Vec<(u32, u32)>>,
}

impl<'a> Drawer<'a> {
    pub fn new(city: &'a City, mix: Mix, seed: u64) -> Self {
        Self {
            city,
            mix,
            rng: fastrand::Rng::with_seed(seed),
            recent: VecDeque::new(),
            unpressed: None,
        }
    }

    /// Every household presses once, in random order (plus repeats per the mix).
    pub fn each_household_once(mut self) -> Self {
        let mut all: Vec<(u32, u32)> = Vec::with_capacity(self.city.households());
        for (g, grid) in self.city.grids.iter().enumerate() {
            for h in 0..grid.households.len() {
                all.push((g as u32, h as u32));
            }
        }
        self.rng.shuffle(&mut all);
        self.unpressed = Some(all);
        self
    }

    pub fn households_left(&self) -> Option<usize> {
        self.unpressed.as_ref().map(Vec::len)
    }

    fn press_kind(&mut self) -> PressKind {
        let roll = self.rng.f64();
        if roll < self.mix.urgent_ratio {
            PressKind::Urgent
        } else if roll < self.mix.urgent_ratio + self.mix.medical_ratio {
            PressKind::Medical
        } else {
            PressKind::Help
        }
    }

    pub fn draw(&mut self) -> Planned {
        if self.rng.f64() < self.mix.camera_ratio {
            return self.camera();
        }
        let repeat = !self.recent.is_empty() && self.rng.f64() < self.mix.repeat_ratio;
        let (grid, household) = if repeat {
            self.recent[self.rng.usize(..self.recent.len())]
        } else if let Some(next) = self.unpressed.as_mut().and_then(Vec::pop) {
            next
        } else {
            let g = self.rng.usize(..self.city.grids.len());
            let h = self.rng.usize(..self.city.grids[g].households.len().max(1));
            (g as u32, h as u32)
        };
        if !repeat {
            self.recent.push_back((grid, household));
            if self.recent.len() > 1024 {
                self.recent.pop_front();
            }
        }
        Planned::Press {
            grid,
            household,
            kind: self.press_kind(),
            repeat,
        }
    }

    fn camera(&mut self) -> Planned {
        let g = self.rng.usize(..self.city.grids.len());
        let cameras = self.city.grids[g].cameras.len().max(1);
        Planned::Camera {
            grid: g as u32,
            camera: self.rng.usize(..cameras) as u32,
            label: LABELS[(self.rng.f64().powi(2) * LABELS.len() as f64) as usize % LABELS.len()],
            confidence: self.confidence(),
        }
    }

    fn confidence(&mut self) -> f32 {
        if self.rng.f64() < self.mix.low_confidence_ratio {
            0.3 + 0.25 * self.rng.f32()
        } else {
            0.65 + 0.35 * self.rng.f32()
        }
    }

    /// A storm: `cameras` cameras across the city each report the same label `repeats` times,
    /// interleaved (so repeats arrive spread over the run, as a stuck detector's would).
    pub fn camera_storm(&mut self, cameras: usize, repeats: usize) -> Vec<Planned> {
        let mut all: Vec<(u32, u32)> = Vec::new();
        for (g, grid) in self.city.grids.iter().enumerate() {
            for c in 0..grid.cameras.len() {
                all.push((g as u32, c as u32));
            }
        }
        self.rng.shuffle(&mut all);
        all.truncate(cameras);
        let labels: Vec<CameraLabel> = all
            .iter()
            .map(|_| LABELS[self.rng.usize(..LABELS.len())])
            .collect();
        let mut out = Vec::with_capacity(all.len() * repeats);
        for _ in 0..repeats {
            for (i, (grid, camera)) in all.iter().enumerate() {
                out.push(Planned::Camera {
                    grid: *grid,
                    camera: *camera,
                    label: labels[i],
                    confidence: self.confidence(),
                });
            }
        }
        out
    }
}

impl Plan {
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.tag)
    }

    /// The sequence number behind an event id or incident id of this run.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        let id = id.strip_prefix("inc-").unwrap_or(id);
        let rest = id.strip_prefix(self.tag.as_str())?.strip_prefix('-')?;
        rest.parse()
            .ok()
            .filter(|seq| *seq < self.events.len() as u64)
    }

    pub fn phase_of(&self, seq: u64) -> Option<usize> {
        self.phases.iter().position(|p| p.range.contains(&seq))
    }

    /// The grid id (the record key) and the protobuf event for `seq`.
    pub fn help_event<'c>(
        &self,
        city: &'c City,
        seq: u64,
        now: Millis,
    ) -> Option<(&'c str, HelpEvent)> {
        let planned = self.events.get(seq as usize)?;
        let envelope = |source: String| Envelope {
            event_id: self.event_id(seq),
            occurred_at: Some(to_timestamp(now)),
            source,
            schema_version: SCHEMA_VERSION,
        };
        match *planned {
            Planned::Press {
                grid,
                household,
                kind,
                ..
            } => {
                let grid = city.grids.get(grid as usize)?;
                let household = grid.households.get(household as usize)?;
                Some((
                    grid.id.as_str(),
                    HelpEvent {
                        envelope: Some(envelope(format!("hub:{household}"))),
                        body: Some(help_event::Body::ButtonPress(ButtonPress {
                            device_id: format!("btn-{household}"),
                            household_id: household.clone(),
                            grid_id: grid.id.clone(),
                            kind: kind as i32,
                            location: Some(grid.centre),
                            battery_percent: 80,
                        })),
                    },
                ))
            }
            Planned::Camera {
                grid,
                camera,
                label,
                confidence,
            } => {
                let grid = city.grids.get(grid as usize)?;
                let camera = grid.cameras.get(camera as usize)?;
                Some((
                    grid.id.as_str(),
                    HelpEvent {
                        envelope: Some(envelope(format!("camera:{camera}"))),
                        body: Some(help_event::Body::CameraAlert(CameraAlert {
                            camera_id: camera.clone(),
                            grid_id: grid.id.clone(),
                            label: label as i32,
                            confidence,
                            zone: "street".into(),
                            snapshot_ref: format!("snap://{camera}/{seq}"),
                            location: Some(grid.centre),
                        })),
                    },
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::CityShape;

    fn city() -> City {
        City::build(
            &CityShape {
                grids: 4,
                workers_per_grid: 1,
                households_per_grid: 5,
                cameras_per_grid: 2,
                grids_per_beat: 2,
                officers_per_beat: 1,
                seed: 3,
            },
            "p-",
        )
    }

    fn mix() -> Mix {
        Mix {
            repeat_ratio: 0.0,
            camera_ratio: 0.0,
            urgent_ratio: 0.1,
            medical_ratio: 0.1,
            low_confidence_ratio: 0.0,
        }
    }

    #[test]
    fn incident_and_event_ids_lead_back_to_the_planned_event() {
        let city = city();
        let mut drawer = Drawer::new(&city, mix(), 1);
        let plan = Plan {
            tag: "t1".into(),
            events: (0..10).map(|_| drawer.draw()).collect(),
            phases: vec![],
        };
        assert_eq!(plan.seq_of("inc-t1-7"), Some(7));
        assert_eq!(plan.seq_of("t1-3"), Some(3));
        assert_eq!(plan.seq_of("t1-10"), None, "beyond the plan");
        assert_eq!(plan.seq_of("inc-t2-3"), None, "another run");
    }

    #[test]
    fn a_flood_presses_every_household_once_before_any_repeats_of_unpressed_ones() {
        let city = city();
        let mut drawer = Drawer::new(&city, mix(), 1).each_household_once();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            if let Planned::Press {
                grid, household, ..
            } = drawer.draw()
            {
                assert!(seen.insert((grid, household)), "pressed twice");
            }
        }
        assert_eq!(seen.len(), 20);
        assert_eq!(drawer.households_left(), Some(0));
    }
}
