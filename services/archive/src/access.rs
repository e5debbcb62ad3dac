//! Who may read history and reports — decided here and nowhere else.
//!
//! Tokens are the status service's (helpgrid-auth, the same key file). History and reports
//! contain every incident of an area, so only roles that oversee an area may read them:
//! supervisors, consoles and admins, each limited to the grids of their token. Responders and
//! dispatch systems are refused (PERMISSION_DENIED) — they have the live API.
//!
//! An area asked for must lie inside the caller's grids; no area means "all my grids". A
//! token may name areas at any level (a county's token): they are resolved against the area
//! registry (`helpgrid_auth::areas`) on every request, so registry changes apply at once.

use crate::areas::AreaTree;
use helpgrid_auth::{Identity, Role, Scope, TokenError, TokenKey};
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::Status;

/// Roles that may read history and reports.
pub const READERS: &[Role] = &[Role::Supervisor, Role::Console, Role::Admin];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccessError {
    #[error("no bearer token: send the header `authorization: Bearer <token>`")]
    NoToken,
    #[error(transparent)]
    BadToken(#[from] TokenError),
    #[error("{0}")]
    Denied(String),
}

impl From<AccessError> for Status {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::NoToken | AccessError::BadToken(_) => {
                Status::unauthenticated(error.to_string())
            }
            AccessError::Denied(m) => Status::permission_denied(m),
        }
    }
}

/// Verifies tokens; `None` when authentication is off.
#[derive(Debug, Clone)]
pub struct Gate {
    key: Option<Arc<TokenKey>>,
}

impl Gate {
    pub fn new(key: Option<Arc<TokenKey>>) -> Self {
        Self { key }
    }

    /// The caller behind `token` (the text after `Bearer `), if they may read history.
    pub fn admit(&self, token: Option<&str>) -> Result<Caller, AccessError> {
        let Some(key) = &self.key else {
            return Ok(Caller { identity: None });
        };
        let token = token.ok_or(AccessError::NoToken)?;
        let identity = key.verify(token)?;
        if !READERS.contains(&identity.role) {
            return Err(AccessError::Denied(format!(
                "a {} token may not read history or reports; ask for a supervisor, console or admin token",
                identity.role
            )));
        }
        Ok(Caller {
            identity: Some(identity),
        })
    }

    /// As [`Gate::admit`], from gRPC metadata.
    pub fn admit_grpc(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        Ok(self.admit(token)?)
    }
}

/// A caller let in.
#[derive(Debug, Clone)]
pub struct Caller {
    identity: Option<Identity>,
}

/// Which grids a query covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GridFilter {
    /// No restriction: every grid.
    All,
    /// Only these grids (possibly none).
    Only(BTreeSet<String>),
}

impl Caller {
    pub fn unrestricted() -> Self {
        Self { identity: None }
    }

    fn scope(&self) -> Scope {
        self.identity
            .as_ref()
            .map_or(Scope::AllGrids, |i| i.scope.clone())
    }

    /// The grids to query for `area` (empty: every grid of the caller), refused when the area
    /// reaches outside the caller's grids.
    pub fn grids_for(&self, area: &str, areas: &AreaTree) -> Result<GridFilter, AccessError> {
        let scope = areas.resolve(&self.scope());
        if area.is_empty() {
            return Ok(match scope {
                Scope::AllGrids => GridFilter::All,
                Scope::Grids(grids) => GridFilter::Only(grids),
            });
        }
        let grids = areas.grids_of(area);
        if let Scope::Grids(mine) = &scope {
            let outside: Vec<&String> = grids.iter().filter(|g| !mine.contains(*g)).collect();
            if !outside.is_empty() {
                return Err(AccessError::Denied(format!(
                    "area {area} is outside your grids ({} of its {} grids are not yours, e.g. {})",
                    outside.len(),
                    grids.len(),
                    outside[0]
                )));
            }
        }
        Ok(GridFilter::Only(grids))
    }

    /// Whether the caller may see incidents of `grid_id` (directly or through an area above).
    pub fn covers(&self, grid_id: &str, areas: &AreaTree) -> bool {
        areas.covers(&self.scope(), grid_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key() -> Arc<TokenKey> {
        Arc::new(TokenKey::from_secret(b"0123456789abcdef0123456789abcdef").expect("key"))
    }

    fn token(key: &TokenKey, role: Role, grids: &[&str]) -> String {
        let grids: Vec<String> = grids.iter().map(|g| (*g).to_owned()).collect();
        key.mint("someone", role, &grids, Duration::from_secs(60))
            .expect("mint")
    }

    #[test]
    fn only_overseeing_roles_read_history() {
        let key = key();
        let gate = Gate::new(Some(Arc::clone(&key)));
        assert_eq!(gate.admit(None).err(), Some(AccessError::NoToken));
        let responder = token(&key, Role::Responder, &["g-1"]);
        assert!(matches!(
            gate.admit(Some(&responder)),
            Err(AccessError::Denied(_))
        ));
        let console = token(&key, Role::Console, &["g-1"]);
        assert!(gate.admit(Some(&console)).is_ok());
    }

    #[test]
    fn an_area_outside_the_callers_grids_is_refused_and_none_means_their_grids() {
        let key = key();
        let gate = Gate::new(Some(Arc::clone(&key)));
        let caller = gate
            .admit(Some(&token(&key, Role::Console, &["g-1", "g-2"])))
            .expect("admitted");
        let areas = AreaTree::default();
        assert_eq!(
            caller.grids_for("", &areas).ok(),
            Some(GridFilter::Only(["g-1".into(), "g-2".into()].into()))
        );
        assert_eq!(
            caller.grids_for("g-2", &areas).ok(),
            Some(GridFilter::Only(["g-2".into()].into()))
        );
        let refused = caller.grids_for("g-3", &areas).err().map(|e| e.to_string());
        assert!(refused.is_some_and(|m| m.contains("area g-3 is outside your grids")));
        assert_eq!(
            Caller::unrestricted().grids_for("", &areas).ok(),
            Some(GridFilter::All)
        );
    }

    #[test]
    fn a_county_token_reads_its_towns_and_no_other_county() {
        let key = key();
        let gate = Gate::new(Some(Arc::clone(&key)));
        let areas = AreaTree::from_parents([
            ("county-1", "city"),
            ("county-2", "city"),
            ("town-1", "county-1"),
            ("town-2", "county-1"),
            ("town-3", "county-2"),
            ("g-1", "town-1"),
            ("g-2", "town-2"),
            ("g-3", "town-3"),
        ]);
        let county = gate
            .admit(Some(&token(&key, Role::Console, &["county-1"])))
            .expect("admitted");
        let both = GridFilter::Only(["g-1".into(), "g-2".into()].into());
        assert_eq!(county.grids_for("", &areas).ok(), Some(both.clone()));
        assert_eq!(county.grids_for("county-1", &areas).ok(), Some(both));
        assert_eq!(
            county.grids_for("town-2", &areas).ok(),
            Some(GridFilter::Only(["g-2".into()].into()))
        );
        assert!(county.grids_for("county-2", &areas).is_err());
        assert!(county.grids_for("city", &areas).is_err());
        assert!(county.covers("g-2", &areas) && !county.covers("g-3", &areas));
        let city = gate
            .admit(Some(&token(&key, Role::Console, &["city"])))
            .expect("admitted");
        assert_eq!(city.grids_for("", &areas).ok(), Some(GridFilter::All));
        assert!(city.covers("g-3", &areas));
    }
}
