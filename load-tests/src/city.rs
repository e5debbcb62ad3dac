//! The synthetic city. Grids sit on a square lattice around Ankang's centre; every grid has
//! its grid workers, households and cameras; supervisors and patrol officers cover blocks of
//! neighbouring grids.

use helpgrid_proto::pb::{GeoPoint, Responder, ResponderRole};

/// Ankang, Shaanxi.
const CENTRE: (f64, f64) = (32.684, 109.029);
/// About 500 m between neighbouring grid centres.
const GRID_SPACING_DEG: f64 = 0.0045;

#[derive(Debug, Clone, clap::Args)]
pub struct CityShape {
    /// Neighbourhood grids.
    #[arg(long, default_value_t = 6)]
    pub grids: usize,
    /// Grid workers per grid.
    #[arg(long, default_value_t = 2)]
    pub workers_per_grid: usize,
    /// Households per grid.
    #[arg(long, default_value_t = 40)]
    pub households_per_grid: usize,
    /// Cameras per grid.
    #[arg(long, default_value_t = 2)]
    pub cameras_per_grid: usize,
    /// Grids in one supervisor's community and one patrol officer's beat.
    #[arg(long, default_value_t = 3)]
    pub grids_per_beat: usize,
    /// Patrol officers per beat.
    #[arg(long, default_value_t = 2)]
    pub officers_per_beat: usize,
    /// Seed for every random choice: the same seed gives the same city and the same day.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct Grid {
    pub id: String,
    pub centre: GeoPoint,
    pub households: Vec<String>,
    pub cameras: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct City {
    pub grids: Vec<Grid>,
    pub responders: Vec<Responder>,
}

fn point(lat: f64, lon: f64) -> GeoPoint {
    GeoPoint {
        latitude: lat,
        longitude: lon,
    }
}

impl City {
    pub fn build(shape: &CityShape, prefix: &str) -> City {
        let side = (shape.grids as f64).sqrt().ceil().max(1.0) as usize;
        let grids: Vec<Grid> = (0..shape.grids)
            .map(|g| {
                let (row, col) = ((g / side) as f64, (g % side) as f64);
                let id = format!("{prefix}grid-{g:04}");
                Grid {
                    centre: point(
                        CENTRE.0 + row * GRID_SPACING_DEG,
                        CENTRE.1 + col * GRID_SPACING_DEG,
                    ),
                    households: (0..shape.households_per_grid)
                        .map(|h| format!("{id}-hh-{h:04}"))
                        .collect(),
                    cameras: (0..shape.cameras_per_grid)
                        .map(|c| format!("{id}-cam-{c:02}"))
                        .collect(),
                    id,
                }
            })
            .collect();
        let surnames = ["吴", "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周"];
        let given = [
            "建国", "秀英", "海燕", "志强", "丽华", "国平", "春梅", "小军",
        ];
        let mut rng = fastrand::Rng::with_seed(shape.seed);
        let mut name = || {
            format!(
                "{}{}",
                surnames[rng.usize(..surnames.len())],
                given[rng.usize(..given.len())]
            )
        };
        let mut responders = Vec::new();
        for grid in &grids {
            for w in 0..shape.workers_per_grid {
                responders.push(Responder {
                    responder_id: format!("{}-worker-{w}", grid.id),
                    display_name: name(),
                    role: ResponderRole::GridWorker as i32,
                    grid_ids: vec![grid.id.clone()],
                    on_duty: true,
                    last_location: Some(grid.centre),
                    location_updated_at: None,
                });
            }
        }
        for (b, beat) in grids.chunks(shape.grids_per_beat.max(1)).enumerate() {
            let ids: Vec<String> = beat.iter().map(|g| g.id.clone()).collect();
            responders.push(Responder {
                responder_id: format!("{prefix}supervisor-{b:03}"),
                display_name: name(),
                role: ResponderRole::GridSupervisor as i32,
                grid_ids: ids.clone(),
                on_duty: true,
                last_location: Some(beat[0].centre),
                location_updated_at: None,
            });
            for o in 0..shape.officers_per_beat {
                let at = beat[o % beat.len()].centre;
                responders.push(Responder {
                    responder_id: format!("{prefix}officer-{b:03}-{o}"),
                    display_name: name(),
                    role: ResponderRole::PatrolOfficer as i32,
                    grid_ids: ids.clone(),
                    on_duty: true,
                    last_location: Some(at),
                    location_updated_at: None,
                });
            }
        }
        City { grids, responders }
    }

    pub fn households(&self) -> usize {
        self.grids.iter().map(|g| g.households.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> CityShape {
        CityShape {
            grids: 7,
            workers_per_grid: 2,
            households_per_grid: 10,
            cameras_per_grid: 1,
            grids_per_beat: 3,
            officers_per_beat: 2,
            seed: 1,
        }
    }

    #[test]
    fn every_grid_has_workers_a_supervisor_and_patrol_officers() {
        let city = City::build(&shape(), "t-");
        assert_eq!(city.grids.len(), 7);
        assert_eq!(city.households(), 70);
        for grid in &city.grids {
            for role in [
                ResponderRole::GridWorker,
                ResponderRole::GridSupervisor,
                ResponderRole::PatrolOfficer,
            ] {
                let covering = city
                    .responders
                    .iter()
                    .filter(|r| r.role == role as i32 && r.grid_ids.contains(&grid.id))
                    .count();
                assert!(covering >= 1, "{} has no {role:?}", grid.id);
            }
        }
        // 7 grids in beats of 3 -> 3 beats: 14 workers + 3 supervisors + 6 officers.
        assert_eq!(city.responders.len(), 23);
    }

    #[test]
    fn the_same_seed_builds_the_same_city() {
        let a = City::build(&shape(), "t-");
        let b = City::build(&shape(), "t-");
        assert_eq!(a.responders, b.responders);
    }
}
