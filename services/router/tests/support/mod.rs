//! What the router's integration tests share: a router run in-process, and the policy most
//! of them use.
#![allow(dead_code)] // each test crate uses a part

use helpgrid_common::kafka::KafkaArgs;
use helpgrid_router::config::RouterConfig;
use helpgrid_router::domain::Policy;
use helpgrid_testkit::WAIT;
use tokio::sync::oneshot;

/// Acknowledgement deadlines too long to pass during a test, so only what the test does
/// moves an incident.
pub fn long_deadlines() -> Policy {
    Policy::default().with_ack_deadline_ms(600_000)
}

/// A test router's configuration: instance `<prefix><instance>`, batches of at most 100.
pub fn config(args: &KafkaArgs, instance: &str, policy: Policy) -> RouterConfig {
    RouterConfig {
        batch_max: 100,
        ..RouterConfig::new(
            args.clone(),
            format!("{}{instance}", args.topic_prefix),
            policy,
        )
    }
}

/// A router running in this process until [`RunningRouter::stop`].
pub struct RunningRouter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRouter {
    pub fn start(config: RouterConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(helpgrid_router::run(config, async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Stops it and requires that it stopped cleanly, within [`WAIT`].
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("router stops in time")
            .expect("router task")
            .expect("router ran without error");
    }
}
