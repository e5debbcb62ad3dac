//! The load generator and benchmark harness (`helpgrid-load`, `helpgrid-relay`).
//!
//! - [`plan`]: what a run sends (ids that lead back to the event), drawn from the city.
//! - [`generator`]: sends it open loop at a rate or as a burst; when each event left.
//! - [`observer`]: reads the output topic; latencies, counts, the reconciliation.
//! - [`services`]: starts and stops the processes under test.
//! - [`flood_services`]: more routers, and the archive and gateway beside them.
//! - [`procstat`]: their CPU and memory from /proc, and the consumer lag.
//! - [`watchers`]: many WatchIncidents streams at once.
//! - [`relay`]: the bare consume → produce relay that HelpGrid is compared with.
//! - [`app_pages`]: responder app pages (SSE): assignment → on the assignee's page.
//! - [`webhooks`]: helpgrid-notify and a receiver: assignment → webhook received.
//! - [`gateway`]: the device gateway beside bare MQTT and Kafka (its own run).
//! - [`scenario`]: the scenarios, each one command; [`report`]: JSON, markdown, SVG.

pub mod app_pages;
pub mod flood_services;
pub mod gateway;
pub mod generator;
pub mod observer;
pub mod plan;
pub mod procstat;
pub mod relay;
pub mod report;
pub mod scenario;
pub mod services;
pub mod watchers;
pub mod webhooks;
