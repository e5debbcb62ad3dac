//! Close outcomes and the older `Resolution`: the one mapping every component uses (the
//! status service at the edge, the router when it applies a close, readers of incidents
//! closed before outcomes existed). The table is documented on `IncidentOutcome` in
//! `incidents.proto`; this is its only implementation.

use crate::pb::{Incident, IncidentOutcome, Resolution};
use std::fmt;

/// Every outcome a close may carry, in the order forms list them.
pub const OUTCOMES: [IncidentOutcome; 6] = [
    IncidentOutcome::ResolvedOnSpot,
    IncidentOutcome::Mediated,
    IncidentOutcome::ReferredToTown,
    IncidentOutcome::ReferredToPolice,
    IncidentOutcome::FalseAlarm,
    IncidentOutcome::NobodyThere,
];

/// Why a close's outcome (and resolution) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeError {
    /// Neither an outcome nor a resolution was given.
    Missing,
    UnknownOutcome(i32),
    UnknownResolution(i32),
    /// Both were given and the resolution is not the outcome's.
    Inconsistent {
        outcome: IncidentOutcome,
        resolution: Resolution,
    },
}

impl fmt::Display for OutcomeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "outcome is required: one of {}", outcome_names()),
            Self::UnknownOutcome(value) => write!(
                f,
                "outcome has no value {value}; use one of {}",
                outcome_names()
            ),
            Self::UnknownResolution(value) => write!(
                f,
                "resolution has no value {value}; leave it unset and send an outcome: one of {}",
                outcome_names()
            ),
            Self::Inconsistent {
                outcome,
                resolution,
            } => write!(
                f,
                "resolution {} contradicts outcome {} (which means {}); leave resolution unset",
                resolution.as_str_name(),
                outcome.as_str_name(),
                resolution_of(*outcome).as_str_name()
            ),
        }
    }
}

impl std::error::Error for OutcomeError {}

fn outcome_names() -> String {
    OUTCOMES
        .iter()
        .map(|o| o.as_str_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The resolution an outcome means, for readers that know only resolutions.
pub fn resolution_of(outcome: IncidentOutcome) -> Resolution {
    match outcome {
        IncidentOutcome::Unspecified => Resolution::Unspecified,
        IncidentOutcome::ResolvedOnSpot | IncidentOutcome::Mediated => Resolution::Resolved,
        IncidentOutcome::ReferredToTown | IncidentOutcome::ReferredToPolice => Resolution::Referred,
        IncidentOutcome::FalseAlarm => Resolution::FalseAlarm,
        IncidentOutcome::NobodyThere => Resolution::NoActionNeeded,
    }
}

/// The outcome a resolution-only close (from a client written before outcomes) is given.
pub fn outcome_of_resolution(resolution: Resolution) -> IncidentOutcome {
    match resolution {
        Resolution::Unspecified => IncidentOutcome::Unspecified,
        Resolution::Resolved => IncidentOutcome::ResolvedOnSpot,
        Resolution::Referred => IncidentOutcome::ReferredToTown,
        Resolution::FalseAlarm => IncidentOutcome::FalseAlarm,
        Resolution::NoActionNeeded => IncidentOutcome::NobodyThere,
    }
}

/// The outcome and resolution a close carrying these raw values applies, or why it may not
/// be applied. An outcome wins; a resolution alone is mapped; a given pair must agree.
pub fn close_outcome(
    outcome: i32,
    resolution: i32,
) -> Result<(IncidentOutcome, Resolution), OutcomeError> {
    let outcome =
        IncidentOutcome::try_from(outcome).map_err(|_| OutcomeError::UnknownOutcome(outcome))?;
    let resolution = Resolution::try_from(resolution)
        .map_err(|_| OutcomeError::UnknownResolution(resolution))?;
    match (outcome, resolution) {
        (IncidentOutcome::Unspecified, Resolution::Unspecified) => Err(OutcomeError::Missing),
        (IncidentOutcome::Unspecified, resolution) => {
            Ok((outcome_of_resolution(resolution), resolution))
        }
        (outcome, Resolution::Unspecified) => Ok((outcome, resolution_of(outcome))),
        (outcome, resolution) if resolution_of(outcome) == resolution => Ok((outcome, resolution)),
        (outcome, resolution) => Err(OutcomeError::Inconsistent {
            outcome,
            resolution,
        }),
    }
}

impl Incident {
    /// How a closed incident ended: its outcome, or for one closed before outcomes existed,
    /// the outcome its resolution maps to. `Unspecified` while open.
    pub fn effective_outcome(&self) -> IncidentOutcome {
        match IncidentOutcome::try_from(self.outcome) {
            Ok(IncidentOutcome::Unspecified) | Err(_) => outcome_of_resolution(
                Resolution::try_from(self.resolution).unwrap_or(Resolution::Unspecified),
            ),
            Ok(outcome) => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_maps_to_a_resolution_that_maps_back_to_an_outcome_of_the_same_meaning() {
        for outcome in OUTCOMES {
            let resolution = resolution_of(outcome);
            assert_ne!(resolution, Resolution::Unspecified, "{outcome:?}");
            assert_eq!(resolution_of(outcome_of_resolution(resolution)), resolution);
        }
    }

    #[test]
    fn an_outcome_alone_derives_its_resolution() {
        assert_eq!(
            close_outcome(IncidentOutcome::Mediated as i32, 0),
            Ok((IncidentOutcome::Mediated, Resolution::Resolved))
        );
        assert_eq!(
            close_outcome(IncidentOutcome::ReferredToPolice as i32, 0),
            Ok((IncidentOutcome::ReferredToPolice, Resolution::Referred))
        );
    }

    #[test]
    fn a_resolution_alone_from_an_old_client_gets_its_mapped_outcome() {
        assert_eq!(
            close_outcome(0, Resolution::NoActionNeeded as i32),
            Ok((IncidentOutcome::NobodyThere, Resolution::NoActionNeeded))
        );
        assert_eq!(
            close_outcome(0, Resolution::Resolved as i32),
            Ok((IncidentOutcome::ResolvedOnSpot, Resolution::Resolved))
        );
    }

    #[test]
    fn missing_unknown_and_contradicting_values_are_refused_with_the_allowed_names() {
        assert_eq!(close_outcome(0, 0), Err(OutcomeError::Missing));
        let unknown = close_outcome(99, 0);
        assert_eq!(unknown, Err(OutcomeError::UnknownOutcome(99)));
        let message = unknown.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("INCIDENT_OUTCOME_NOBODY_THERE"),
            "{message}"
        );
        assert_eq!(
            close_outcome(0, 42),
            Err(OutcomeError::UnknownResolution(42))
        );
        assert_eq!(
            close_outcome(
                IncidentOutcome::FalseAlarm as i32,
                Resolution::Resolved as i32
            ),
            Err(OutcomeError::Inconsistent {
                outcome: IncidentOutcome::FalseAlarm,
                resolution: Resolution::Resolved
            })
        );
    }

    #[test]
    fn an_incident_closed_before_outcomes_reads_as_its_resolutions_outcome() {
        let old = Incident {
            resolution: Resolution::Referred as i32,
            ..Default::default()
        };
        assert_eq!(old.effective_outcome(), IncidentOutcome::ReferredToTown);
        let new = Incident {
            resolution: Resolution::Referred as i32,
            outcome: IncidentOutcome::ReferredToPolice as i32,
            ..Default::default()
        };
        assert_eq!(new.effective_outcome(), IncidentOutcome::ReferredToPolice);
    }
}
