//! Who can be sent: the roster as a table keyed by responder id, indexed by grid, and the
//! order in which candidates are offered an incident.

use super::desk::Map;
use helpgrid_proto::pb::{GeoPoint, Responder, ResponderRole};
use std::collections::{BTreeSet, HashSet};

#[derive(Debug, Default, Clone)]
pub struct Roster {
    responders: Map<String, Responder>,
    /// grid id -> responders covering it (on duty or not); kept sorted for stable iteration.
    by_grid: Map<String, BTreeSet<String>>,
}

impl Roster {
    /// Inserts or replaces a responder's full record.
    pub fn upsert(&mut self, responder: Responder) {
        self.remove(&responder.responder_id.clone());
        for grid in &responder.grid_ids {
            self.by_grid
                .entry(grid.clone())
                .or_default()
                .insert(responder.responder_id.clone());
        }
        self.responders
            .insert(responder.responder_id.clone(), responder);
    }

    pub fn remove(&mut self, responder_id: &str) {
        if let Some(old) = self.responders.remove(responder_id) {
            for grid in &old.grid_ids {
                if let Some(ids) = self.by_grid.get_mut(grid) {
                    ids.remove(responder_id);
                    if ids.is_empty() {
                        self.by_grid.remove(grid);
                    }
                }
            }
        }
    }

    pub fn get(&self, responder_id: &str) -> Option<&Responder> {
        self.responders.get(responder_id)
    }

    pub fn len(&self) -> usize {
        self.responders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responders.is_empty()
    }

    /// True when the responder exists, has `role` and covers `grid_id` (on duty or not).
    pub fn covers(&self, responder_id: &str, role: ResponderRole, grid_id: &str) -> bool {
        self.get(responder_id)
            .is_some_and(|r| r.role == role as i32 && r.grid_ids.iter().any(|g| g == grid_id))
    }

    /// The best on-duty responder with `role` covering `grid_id`, skipping `excluded`:
    /// lowest open load first, then nearest to `near` (unknown distance last), then by id
    /// so that the choice is deterministic.
    pub fn best_candidate(
        &self,
        role: ResponderRole,
        grid_id: &str,
        near: Option<&GeoPoint>,
        excluded: &HashSet<&str>,
        load: impl Fn(&str) -> u32,
    ) -> Option<&Responder> {
        let ids = self.by_grid.get(grid_id)?;
        ids.iter()
            .filter(|id| !excluded.contains(id.as_str()))
            .filter_map(|id| self.responders.get(id))
            .filter(|r| r.on_duty && r.role == role as i32)
            .map(|r| {
                let distance = match (near, r.last_location.as_ref()) {
                    (Some(a), Some(b)) => distance_m(a, b),
                    _ => f64::INFINITY,
                };
                (load(&r.responder_id), distance, r)
            })
            .min_by(|a, b| {
                a.0.cmp(&b.0)
                    .then(a.1.total_cmp(&b.1))
                    .then_with(|| a.2.responder_id.cmp(&b.2.responder_id))
            })
            .map(|(_, _, r)| r)
    }
}

/// Great-circle distance in metres (haversine).
pub fn distance_m(a: &GeoPoint, b: &GeoPoint) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_000.0;
    let (lat1, lat2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_testkit::records::responder;

    fn no_load(_: &str) -> u32 {
        0
    }

    #[test]
    fn lowest_load_wins_over_distance() {
        let mut roster = Roster::default();
        roster.upsert(responder(
            "near",
            ResponderRole::GridWorker,
            &["g1"],
            Some((32.68, 109.02)),
        ));
        roster.upsert(responder(
            "far",
            ResponderRole::GridWorker,
            &["g1"],
            Some((32.70, 109.10)),
        ));
        let here = GeoPoint {
            latitude: 32.68,
            longitude: 109.02,
        };
        let load = |id: &str| u32::from(id == "near");
        let best = roster.best_candidate(
            ResponderRole::GridWorker,
            "g1",
            Some(&here),
            &HashSet::new(),
            load,
        );
        assert_eq!(best.map(|r| r.responder_id.as_str()), Some("far"));
    }

    #[test]
    fn nearest_wins_at_equal_load_and_unknown_location_comes_last() {
        let mut roster = Roster::default();
        roster.upsert(responder(
            "a-nowhere",
            ResponderRole::PatrolOfficer,
            &["g1"],
            None,
        ));
        roster.upsert(responder(
            "far",
            ResponderRole::PatrolOfficer,
            &["g1"],
            Some((32.70, 109.10)),
        ));
        roster.upsert(responder(
            "near",
            ResponderRole::PatrolOfficer,
            &["g1"],
            Some((32.681, 109.021)),
        ));
        let here = GeoPoint {
            latitude: 32.68,
            longitude: 109.02,
        };
        let best = roster.best_candidate(
            ResponderRole::PatrolOfficer,
            "g1",
            Some(&here),
            &HashSet::new(),
            no_load,
        );
        assert_eq!(best.map(|r| r.responder_id.as_str()), Some("near"));
    }

    #[test]
    fn ties_break_by_responder_id() {
        let mut roster = Roster::default();
        roster.upsert(responder("w2", ResponderRole::GridWorker, &["g1"], None));
        roster.upsert(responder("w1", ResponderRole::GridWorker, &["g1"], None));
        let best = roster.best_candidate(
            ResponderRole::GridWorker,
            "g1",
            None,
            &HashSet::new(),
            no_load,
        );
        assert_eq!(best.map(|r| r.responder_id.as_str()), Some("w1"));
    }

    #[test]
    fn off_duty_other_role_other_grid_and_excluded_are_never_offered() {
        let mut roster = Roster::default();
        let mut off = responder("off", ResponderRole::GridWorker, &["g1"], None);
        off.on_duty = false;
        roster.upsert(off);
        roster.upsert(responder(
            "cop",
            ResponderRole::PatrolOfficer,
            &["g1"],
            None,
        ));
        roster.upsert(responder(
            "elsewhere",
            ResponderRole::GridWorker,
            &["g2"],
            None,
        ));
        roster.upsert(responder(
            "timed-out",
            ResponderRole::GridWorker,
            &["g1"],
            None,
        ));
        let excluded = HashSet::from(["timed-out"]);
        assert!(
            roster
                .best_candidate(ResponderRole::GridWorker, "g1", None, &excluded, no_load)
                .is_none()
        );
    }

    #[test]
    fn upsert_moves_a_responder_between_grids() {
        let mut roster = Roster::default();
        roster.upsert(responder("w1", ResponderRole::GridWorker, &["g1"], None));
        roster.upsert(responder("w1", ResponderRole::GridWorker, &["g2"], None));
        assert!(
            roster
                .best_candidate(
                    ResponderRole::GridWorker,
                    "g1",
                    None,
                    &HashSet::new(),
                    no_load
                )
                .is_none()
        );
        assert!(
            roster
                .best_candidate(
                    ResponderRole::GridWorker,
                    "g2",
                    None,
                    &HashSet::new(),
                    no_load
                )
                .is_some()
        );
        roster.remove("w1");
        assert!(roster.is_empty());
    }

    #[test]
    fn distance_of_one_degree_latitude_is_about_111_km() {
        let a = GeoPoint {
            latitude: 32.0,
            longitude: 109.0,
        };
        let b = GeoPoint {
            latitude: 33.0,
            longitude: 109.0,
        };
        let d = distance_m(&a, &b);
        assert!((d - 111_195.0).abs() < 100.0, "{d}");
    }
}
