//! The administrative levels: city → county → town → community → grid. An area id names any
//! of them; queries and reports for an area cover every grid below it, and a token scoped to
//! an area sees every grid below it.
//!
//! The registry's types and rules live in `helpgrid_auth::areas` (tokens refer to the same
//! registry in the status service); the archive keeps it in PostgreSQL (`areas` table).

pub use helpgrid_auth::areas::{Area, AreaTree, LEVELS, parse_csv};
