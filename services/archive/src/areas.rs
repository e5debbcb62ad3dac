//! The administrative levels: city → county → town → community → grid. An area id names any
//! of them; queries and reports for an area cover every grid below it.
//!
//! Pure: built from (area, parent) pairs. An id the registry does not know is taken as a
//! grid id (grids need not be registered to be archived or queried).

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone)]
pub struct AreaGrids {
    /// Area → its direct children (areas or grids).
    children: HashMap<String, Vec<String>>,
}

impl AreaGrids {
    /// From (child, parent) pairs.
    pub fn from_parents<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for (child, parent) in pairs {
            if !parent.is_empty() {
                children
                    .entry(parent.to_owned())
                    .or_default()
                    .push(child.to_owned());
            }
        }
        Self { children }
    }

    /// Every grid at or below `area` (the area itself when it has no children: a grid).
    pub fn grids_of(&self, area: &str) -> BTreeSet<String> {
        let mut grids = BTreeSet::new();
        let mut todo = vec![area.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(next) = todo.pop() {
            if !seen.insert(next.clone()) {
                continue; // a cycle in bad registry data must not loop forever
            }
            match self.children.get(&next) {
                Some(kids) => todo.extend(kids.iter().cloned()),
                None => {
                    grids.insert(next);
                }
            }
        }
        grids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_area_covers_every_grid_below_it_and_an_unknown_id_is_a_grid() {
        let areas = AreaGrids::from_parents([
            ("county-1", "city"),
            ("town-1", "county-1"),
            ("town-2", "county-1"),
            ("comm-1", "town-1"),
            ("comm-2", "town-2"),
            ("g-1", "comm-1"),
            ("g-2", "comm-1"),
            ("g-3", "comm-2"),
        ]);
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(areas.grids_of("county-1"), set(&["g-1", "g-2", "g-3"]));
        assert_eq!(areas.grids_of("town-1"), set(&["g-1", "g-2"]));
        assert_eq!(areas.grids_of("g-3"), set(&["g-3"]));
        assert_eq!(areas.grids_of("g-99"), set(&["g-99"]));
    }

    #[test]
    fn a_cycle_in_the_registry_ends() {
        let areas = AreaGrids::from_parents([("a", "b"), ("b", "a")]);
        assert!(areas.grids_of("a").is_empty());
    }
}
