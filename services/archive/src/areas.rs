//! The administrative levels: city → county → town → community → grid. An area id names any
//! of them; queries and reports for an area cover every grid below it.
//!
//! Pure: built from (area, parent) pairs. An id the registry does not know is taken as a
//! grid id (grids need not be registered to be archived or queried).

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
