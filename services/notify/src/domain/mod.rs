//! The webhook policy, pure: no Kafka, no HTTP, no clock of its own (`now` is passed in).
//!
//! - [`notice`]: which incident events are worth telling, and about whom.
//! - [`subscription`]: who wants which notices (validated once), and matching.
//! - [`body`]: the JSON bodies (generic, WeCom, DingTalk, Feishu).
//! - [`signature`]: the HMAC-SHA256 signature header.
//! - [`retry`]: backoff with jitter, the retry budget, which answers are worth a retry.
//! - [`breaker`]: the per-endpoint circuit breaker.
//! - [`lanes`]: per-incident ordering inside an endpoint's parallel lanes.
//! - [`renotify`]: re-notify the assignee at half the acknowledgement deadline.
//! - [`offsets`]: which consumer offsets may be committed (everything before is done).

pub mod body;
pub mod breaker;
pub mod lanes;
pub mod notice;
pub mod offsets;
pub mod renotify;
pub mod retry;
pub mod signature;
pub mod subscription;
