//! Tokens scoped by area level, and the area registry they refer to.
//!
//! The registry is the city's administrative levels: city → county/district → town/street →
//! community/village → grid, each area with a name and its parent. A token's `grids` claim
//! may name an area at ANY of these levels: a county's token covers every grid of its towns.
//! [`AreaTree::resolve`] turns such a scope into the grids it covers, once per request, so
//! every check downstream ([`Scope::covers`], grid filters) stays a plain set lookup.
//!
//! Rules (pure, unit-tested here):
//! - an id the registry does not know is taken as a grid id (grids need not be registered to
//!   be routed, archived or shown), so a token for an unknown id covers exactly that id;
//! - a token naming the registry's root (the city) covers every grid: [`Scope::AllGrids`];
//! - a cycle in bad registry data ends (it covers nothing more), it never loops.
//!
//! Kept apart from token verification (lib.rs) on purpose: the scope of a verified token is
//! resolved after verification, by whoever holds the registry (status, archive).

use crate::Scope;
use std::collections::{BTreeSet, HashMap, HashSet};

/// The levels, top down.
pub const LEVELS: [&str; 5] = ["city", "county", "town", "community", "grid"];

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub area_id: String,
    /// Empty for the city.
    pub parent_id: String,
    pub level: String,
    pub name: String,
}

/// Reads `area_id,parent_id,level,name` CSV (a header line first; names may not contain
/// commas). Every line is checked: a known level, a parent one level up when the parent is in
/// the file, no duplicate ids. Nothing is returned if any line is bad; every bad line is named.
pub fn parse_csv(text: &str) -> Result<Vec<Area>, Vec<String>> {
    let mut lines = text.lines().enumerate();
    let mut errors = Vec::new();
    match lines.next() {
        Some((_, header)) if header.trim() == "area_id,parent_id,level,name" => {}
        _ => {
            return Err(vec![
                "line 1: the header must be area_id,parent_id,level,name".into(),
            ]);
        }
    }
    let mut areas = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let n = i + 1;
        let [id, parent, level, name] = fields[..] else {
            errors.push(format!("line {n}: expected 4 fields, got {}", fields.len()));
            continue;
        };
        if id.is_empty() {
            errors.push(format!("line {n}: empty area_id"));
            continue;
        }
        if !LEVELS.contains(&level) {
            errors.push(format!(
                "line {n}: unknown level {level:?} (one of {LEVELS:?})"
            ));
            continue;
        }
        if (level == "city") != parent.is_empty() {
            errors.push(format!("line {n}: only the city has no parent"));
            continue;
        }
        if !seen.insert(id.to_owned()) {
            errors.push(format!("line {n}: area {id} appears twice"));
            continue;
        }
        areas.push(Area {
            area_id: id.into(),
            parent_id: parent.into(),
            level: level.into(),
            name: name.into(),
        });
    }
    let level_of: HashMap<&str, usize> = areas
        .iter()
        .filter_map(|a| {
            Some((
                a.area_id.as_str(),
                LEVELS.iter().position(|l| *l == a.level)?,
            ))
        })
        .collect();
    for a in &areas {
        if let (Some(child), Some(parent)) = (
            level_of.get(a.area_id.as_str()),
            level_of.get(a.parent_id.as_str()),
        ) && *child != parent + 1
        {
            errors.push(format!(
                "area {}: a {} cannot be under the {} {}",
                a.area_id, a.level, LEVELS[*parent], a.parent_id
            ));
        }
    }
    if errors.is_empty() {
        Ok(areas)
    } else {
        Err(errors)
    }
}

/// The registry as a tree: who is under whom, and each area's level and name.
#[derive(Debug, Default, Clone)]
pub struct AreaTree {
    /// Area → its direct children (areas or grids), in registry order.
    children: HashMap<String, Vec<String>>,
    /// Area → its parent (absent for the root and for ids the registry does not know).
    parents: HashMap<String, String>,
    /// Level and name of each registered area.
    entries: HashMap<String, (String, String)>,
}

impl AreaTree {
    /// From registry entries.
    pub fn from_areas<'a>(areas: impl IntoIterator<Item = &'a Area>) -> Self {
        let mut tree = Self::default();
        for a in areas {
            tree.add(&a.area_id, &a.parent_id);
            tree.entries
                .insert(a.area_id.clone(), (a.level.clone(), a.name.clone()));
        }
        tree
    }

    /// From (child, parent) pairs alone (no levels or names).
    pub fn from_parents<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut tree = Self::default();
        for (child, parent) in pairs {
            tree.add(child, parent);
        }
        tree
    }

    fn add(&mut self, child: &str, parent: &str) {
        if parent.is_empty() {
            return;
        }
        self.children
            .entry(parent.to_owned())
            .or_default()
            .push(child.to_owned());
        self.parents.insert(child.to_owned(), parent.to_owned());
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && self.entries.is_empty()
    }

    /// Every grid at or below `area` (the area itself when it has no children: a grid).
    pub fn grids_of(&self, area: &str) -> BTreeSet<String> {
        let mut grids = BTreeSet::new();
        let mut todo = vec![area.to_owned()];
        let mut seen = HashSet::new();
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

    /// The direct children of `area` (empty for a grid or an unknown id).
    pub fn children(&self, area: &str) -> &[String] {
        self.children.get(area).map_or(&[], Vec::as_slice)
    }

    /// The area's parent, if it has one in the registry.
    pub fn parent(&self, area: &str) -> Option<&str> {
        self.parents.get(area).map(String::as_str)
    }

    /// The area's level ("city" … "grid"); an unknown id is a grid.
    pub fn level(&self, area: &str) -> &str {
        self.entries.get(area).map_or_else(
            || {
                if self.children.contains_key(area) {
                    "area"
                } else {
                    "grid"
                }
            },
            |(level, _)| level.as_str(),
        )
    }

    /// The area's name; its id when the registry has none.
    pub fn name<'a>(&'a self, area: &'a str) -> &'a str {
        self.entries
            .get(area)
            .map_or(area, |(_, name)| name.as_str())
    }

    /// Is `area` the registry's root (an area with children and no parent)?
    fn is_root(&self, area: &str) -> bool {
        self.children.contains_key(area) && !self.parents.contains_key(area)
    }

    /// Whether `scope` covers `grid_id`: the grid or one of the areas above it is named (the
    /// same answer as `self.resolve(scope).covers(grid_id)`, without listing every grid).
    pub fn covers(&self, scope: &Scope, grid_id: &str) -> bool {
        let Scope::Grids(named) = scope else {
            return true;
        };
        if named.iter().any(|a| self.is_root(a)) {
            return true;
        }
        let mut at = grid_id;
        let mut seen = HashSet::new();
        loop {
            if named.contains(at) {
                return true;
            }
            if !seen.insert(at) {
                return false; // a cycle in bad registry data
            }
            match self.parent(at) {
                Some(parent) => at = parent,
                None => return false,
            }
        }
    }

    /// The grids a token's scope covers: each named area becomes the grids below it; the
    /// root (the city) means every grid.
    pub fn resolve(&self, scope: &Scope) -> Scope {
        match scope {
            Scope::AllGrids => Scope::AllGrids,
            Scope::Grids(named) if named.iter().any(|a| self.is_root(a)) => Scope::AllGrids,
            Scope::Grids(named) => {
                Scope::Grids(named.iter().flat_map(|area| self.grids_of(area)).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// city → 2 counties → towns → communities → grids.
    fn city() -> AreaTree {
        AreaTree::from_parents([
            ("county-1", "city"),
            ("county-2", "city"),
            ("town-1", "county-1"),
            ("town-2", "county-1"),
            ("town-3", "county-2"),
            ("comm-1", "town-1"),
            ("comm-2", "town-2"),
            ("comm-3", "town-3"),
            ("g-1", "comm-1"),
            ("g-2", "comm-1"),
            ("g-3", "comm-2"),
            ("g-4", "comm-3"),
        ])
    }

    #[test]
    fn a_registry_csv_is_read_and_every_bad_line_named() {
        let good =
            "area_id,parent_id,level,name\nankang,,city,安康市\nhanbin,ankang,county,汉滨区\n";
        assert_eq!(parse_csv(good).map(|a| a.len()), Ok(2));
        let bad = "area_id,parent_id,level,name\nankang,,city,安康\nx,ankang,grid,X\ny,ankang,borough,Y\nankang,,city,again\n";
        let errors = parse_csv(bad).expect_err("refused");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("unknown level \"borough\""))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("a grid cannot be under the city ankang"))
        );
        assert!(parse_csv("id,name\n").is_err());
    }

    #[test]
    fn an_area_covers_every_grid_below_it_and_an_unknown_id_is_a_grid() {
        let areas = city();
        assert_eq!(areas.grids_of("county-1"), set(&["g-1", "g-2", "g-3"]));
        assert_eq!(areas.grids_of("town-1"), set(&["g-1", "g-2"]));
        assert_eq!(areas.grids_of("g-3"), set(&["g-3"]));
        assert_eq!(areas.grids_of("g-99"), set(&["g-99"]));
    }

    #[test]
    fn a_cycle_in_the_registry_ends() {
        let areas = AreaTree::from_parents([("a", "b"), ("b", "a")]);
        assert!(areas.grids_of("a").is_empty());
    }

    #[test]
    fn a_county_token_covers_its_towns_grids_and_nothing_else() {
        let scope = city().resolve(&Scope::Grids(set(&["county-1"])));
        for grid in ["g-1", "g-2", "g-3"] {
            assert!(scope.covers(grid), "{grid}");
        }
        assert!(!scope.covers("g-4"));
        assert!(!scope.covers("county-2"));
    }

    #[test]
    fn every_level_resolves_and_mixed_claims_add_up() {
        let tree = city();
        let resolve = |claim: &[&str]| tree.resolve(&Scope::Grids(set(claim)));
        assert_eq!(resolve(&["town-2"]), Scope::Grids(set(&["g-3"])));
        assert_eq!(resolve(&["comm-1"]), Scope::Grids(set(&["g-1", "g-2"])));
        assert_eq!(resolve(&["g-4"]), Scope::Grids(set(&["g-4"])));
        assert_eq!(
            resolve(&["comm-1", "g-4", "g-unregistered"]),
            Scope::Grids(set(&["g-1", "g-2", "g-4", "g-unregistered"]))
        );
        assert_eq!(resolve(&[]), Scope::Grids(BTreeSet::new()));
    }

    #[test]
    fn covers_agrees_with_resolve_for_every_grid_and_claim() {
        let tree = city();
        let claims: [&[&str]; 6] = [
            &["county-1"],
            &["town-3"],
            &["comm-1", "g-4"],
            &["city"],
            &["g-unregistered"],
            &[],
        ];
        for claim in claims {
            let scope = Scope::Grids(set(claim));
            let resolved = tree.resolve(&scope);
            for grid in ["g-1", "g-2", "g-3", "g-4", "g-unregistered", "g-other"] {
                assert_eq!(
                    tree.covers(&scope, grid),
                    resolved.covers(grid),
                    "{claim:?} {grid}"
                );
            }
        }
    }

    #[test]
    fn the_city_token_covers_every_grid_even_unregistered_ones() {
        let scope = city().resolve(&Scope::Grids(set(&["city"])));
        assert_eq!(scope, Scope::AllGrids);
        assert_eq!(city().resolve(&Scope::AllGrids), Scope::AllGrids);
    }

    #[test]
    fn without_a_registry_a_claim_is_a_list_of_grids() {
        let scope = AreaTree::default().resolve(&Scope::Grids(set(&["g-1", "county-1"])));
        assert_eq!(scope, Scope::Grids(set(&["g-1", "county-1"])));
    }

    #[test]
    fn levels_names_and_children_come_from_the_registry() {
        let areas = parse_csv(
            "area_id,parent_id,level,name\nc,,city,City\nk,c,county,County K\nt,k,town,Town T\n",
        )
        .expect("csv");
        let tree = AreaTree::from_areas(&areas);
        assert_eq!(tree.level("k"), "county");
        assert_eq!(tree.name("t"), "Town T");
        assert_eq!(tree.children("c"), ["k".to_owned()]);
        assert_eq!(tree.parent("t"), Some("k"));
        assert_eq!(tree.level("g-9"), "grid");
        assert_eq!(tree.name("g-9"), "g-9");
    }
}
