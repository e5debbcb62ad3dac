//! The console by administrative level: a community, a town or the whole city, aggregated by
//! the level below (a town's screen shows one line per community, the city's one per county).
//!
//! Pure: the registry ([`AreaTree`]) and the incidents in, counts per child area out. The page
//! receives the children with their grids in the snapshot and keeps the counts live from the
//! changes that follow with the same rule ([`child_of`] in JavaScript: the child whose grids
//! hold the incident's grid).

use crate::console::view::IncidentView;
use helpgrid_auth::areas::AreaTree;
use helpgrid_common::time::Millis;
use serde::Serialize;
use std::collections::HashMap;

/// One area below the one shown, with its counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildArea {
    pub id: String,
    pub name: String,
    pub level: String,
    /// Every grid at or below it (the page maps an incident's grid to this child).
    pub grids: Vec<String>,
    /// Incidents opened since `today_from`.
    pub today: u32,
    /// Incidents not closed, whenever opened.
    pub open: u32,
    /// Incidents opened since `today_from` and closed.
    pub closed: u32,
}

/// The area shown and its children.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    pub id: String,
    pub name: String,
    pub level: String,
    /// The level of the children ("community" under a town); "grid" under a community.
    pub child_level: String,
    pub children: Vec<ChildArea>,
}

/// `area`'s children with the counts of `incidents` (already limited to the area's grids).
/// An area without children (a grid) is its own only child.
pub fn breakdown(
    tree: &AreaTree,
    area: &str,
    incidents: &[IncidentView],
    today_from: Millis,
) -> Breakdown {
    let kids: Vec<String> = match tree.children(area) {
        [] => vec![area.to_owned()],
        kids => kids.to_vec(),
    };
    let mut children: Vec<ChildArea> = kids
        .iter()
        .map(|id| ChildArea {
            id: id.clone(),
            name: tree.name(id).to_owned(),
            level: tree.level(id).to_owned(),
            grids: tree.grids_of(id).into_iter().collect(),
            today: 0,
            open: 0,
            closed: 0,
        })
        .collect();
    let child_of: HashMap<&str, usize> = children
        .iter()
        .enumerate()
        .flat_map(|(n, c)| c.grids.iter().map(move |g| (g.as_str(), n)))
        .collect();
    let mut counts = vec![(0u32, 0u32, 0u32); children.len()];
    for incident in incidents {
        let Some(n) = child_of.get(incident.grid.as_str()) else {
            continue;
        };
        let today = incident.opened_at.is_some_and(|t| t >= today_from);
        let closed = incident.state == "closed";
        let c = &mut counts[*n];
        c.0 += u32::from(today);
        c.1 += u32::from(!closed);
        c.2 += u32::from(today && closed);
    }
    for (child, (today, open, closed)) in children.iter_mut().zip(counts) {
        child.today = today;
        child.open = open;
        child.closed = closed;
    }
    children.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Breakdown {
        id: area.to_owned(),
        name: tree.name(area).to_owned(),
        level: tree.level(area).to_owned(),
        child_level: children
            .first()
            .map_or_else(|| "grid".to_owned(), |c| c.level.clone()),
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_auth::areas::parse_csv;

    fn tree() -> AreaTree {
        let csv = "area_id,parent_id,level,name\n\
                   city,,city,City\n\
                   county-1,city,county,County One\n\
                   town-1,county-1,town,Town One\n\
                   comm-a,town-1,community,Alpha\n\
                   comm-b,town-1,community,Beta\n\
                   g-1,comm-a,grid,G1\n\
                   g-2,comm-a,grid,G2\n\
                   g-3,comm-b,grid,G3\n";
        AreaTree::from_areas(&parse_csv(csv).expect("csv"))
    }

    fn incident(id: &str, grid: &str, state: &'static str, opened_at: Millis) -> IncidentView {
        IncidentView {
            id: id.into(),
            grid: grid.into(),
            state,
            priority: "normal",
            source: "button",
            kind: "Help",
            place: String::new(),
            opened_at: Some(opened_at),
            acknowledged_at: None,
            closed_at: None,
            deadline: None,
            escalated: false,
            reports: 1,
            outcome: None,
            revision: 1,
            responders: Vec::new(),
        }
    }

    #[test]
    fn a_town_counts_per_community_today_open_and_closed() {
        let incidents = [
            incident("i1", "g-1", "assigned", 1_000),
            incident("i2", "g-2", "closed", 1_000),
            incident("i3", "g-3", "waiting", 10),
            incident("i4", "g-3", "closed", 10),
            incident("elsewhere", "g-9", "waiting", 1_000),
        ];
        let b = breakdown(&tree(), "town-1", &incidents, 500);
        assert_eq!((b.name.as_str(), b.level.as_str()), ("Town One", "town"));
        assert_eq!(b.child_level, "community");
        let rows: Vec<(&str, u32, u32, u32)> = b
            .children
            .iter()
            .map(|c| (c.name.as_str(), c.today, c.open, c.closed))
            .collect();
        // Alpha: both opened today, one open, one closed; Beta: none today, one still open.
        assert_eq!(rows, [("Alpha", 2, 1, 1), ("Beta", 0, 1, 0)]);
        assert_eq!(b.children[0].grids, ["g-1", "g-2"]);
    }

    #[test]
    fn the_city_aggregates_by_county_and_a_grid_is_its_own_child() {
        let incidents = [incident("i1", "g-3", "waiting", 1_000)];
        let city = breakdown(&tree(), "city", &incidents, 0);
        assert_eq!(city.child_level, "county");
        assert_eq!(city.children.len(), 1);
        assert_eq!(city.children[0].grids, ["g-1", "g-2", "g-3"]);
        assert_eq!(city.children[0].open, 1);
        let grid = breakdown(&tree(), "g-3", &incidents, 0);
        assert_eq!(grid.children.len(), 1);
        assert_eq!(
            (grid.children[0].id.as_str(), grid.children[0].open),
            ("g-3", 1)
        );
    }
}
