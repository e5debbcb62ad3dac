//! A simulated city that drives HelpGrid end to end, the way real users would.
//!
//! - [`city`]: the synthetic city (grids, households, cameras, responders), from a seed.
//! - [`residents`]: households pressing buttons and cameras raising alerts, onto Kafka or,
//!   through [`devices`], as Zigbee2MQTT and Frigate messages to the gateway's MQTT broker.
//! - [`responders`]: responders watching their incidents and acknowledging and closing them
//!   over the gRPC API after human-like delays.
//! - [`sim`]: wires them together for a run.
//! - [`tally`]: live counts and time-to-assign / time-to-acknowledge percentiles.
//! - [`load`]: the load generator and benchmark harness (`helpgrid-load`, `helpgrid-relay`),
//!   with the scenarios documented in load-tests/README.md.

pub mod city;
pub mod devices;
pub mod load;
pub mod residents;
pub mod responders;
pub mod sim;
pub mod tally;

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;
    use helpgrid_common::cli::undocumented;

    #[test]
    fn every_load_test_binary_answers_version_and_every_flag_has_help() {
        let mut problems = undocumented(&crate::sim::SimArgs::command());
        problems.extend(undocumented(&crate::load::scenario::LoadArgs::command()));
        problems.extend(undocumented(&crate::load::relay::RelayArgs::command()));
        assert_eq!(problems, Vec::<String>::new());
    }
}
