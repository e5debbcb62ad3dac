//! One place that turns HelpGrid's Kafka settings into librdkafka configurations.
//!
//! Typed settings come first; `--kafka-option key=value` pairs are passed through last, so an
//! operator can add SSL/SASL or tuning options without a code change (and can override ours).

use rdkafka::ClientConfig;

/// How long the router's transactional producer waits for a broker's answer to one request
/// before retrying elsewhere (`socket.timeout.ms`). Above the slowest single request seen on
/// a loaded 2-core machine (about 1 s), below the cluster's broker session timeout (6 s
/// locally, 9 s by default), so requests stuck at a hung leader are retried about when its
/// partitions move. Overridable with `--kafka-option socket.timeout.ms=…`.
pub const ROUTER_REQUEST_TIMEOUT_MS: &str = "3000";

/// Command-line/environment settings for every Kafka client of a service.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(
        long = "kafka-brokers",
        env = "HELPGRID_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Extra librdkafka option for every client, `key=value`; repeat the flag, or separate with
    /// `;` in the environment variable (e.g. `security.protocol=SASL_SSL;sasl.mechanism=PLAIN`).
    #[arg(long = "kafka-option", env = "HELPGRID_KAFKA_OPTIONS", value_delimiter = ';', value_parser = parse_option)]
    pub options: Vec<(String, String)>,
    /// Prefix of every topic name.
    #[arg(
        long = "topic-prefix",
        env = "HELPGRID_TOPIC_PREFIX",
        default_value = "helpgrid."
    )]
    pub topic_prefix: String,
    /// Partitions for topics the service creates (help events, commands and incident events
    /// must have the same count: they are co-partitioned by grid).
    #[arg(
        long = "topic-partitions",
        env = "HELPGRID_TOPIC_PARTITIONS",
        default_value_t = 6
    )]
    pub topic_partitions: i32,
    /// Replication factor for topics the service creates.
    #[arg(
        long = "topic-replication",
        env = "HELPGRID_TOPIC_REPLICATION",
        default_value_t = 1
    )]
    pub topic_replication: i32,
    /// Hours incident-events (the audit log and Watch feed) keep records, set when the topic is
    /// created. Open incidents do not depend on it: they are restored from incident-state.
    #[arg(
        long = "incident-events-retention-hours",
        env = "HELPGRID_INCIDENT_EVENTS_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub incident_events_retention_hours: u64,
    /// Hours help-events and incident-commands keep records, set when the topics are created:
    /// the longest a router may be down before unread presses are lost.
    #[arg(
        long = "input-retention-hours",
        env = "HELPGRID_INPUT_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub input_retention_hours: u64,
    /// Hours dead-letters keep records, set when the topic is created.
    #[arg(
        long = "dead-letter-retention-hours",
        env = "HELPGRID_DEAD_LETTER_RETENTION_HOURS",
        default_value_t = 720
    )]
    pub dead_letter_retention_hours: u64,
}

fn parse_option(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected key=value, got {raw:?}")),
    }
}

impl KafkaArgs {
    /// Settings for tests and tools: the given brokers and prefix, defaults otherwise.
    pub fn new(brokers: impl Into<String>, topic_prefix: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            options: Vec::new(),
            topic_prefix: topic_prefix.into(),
            topic_partitions: 6,
            topic_replication: 1,
            incident_events_retention_hours: 168,
            input_retention_hours: 168,
            dead_letter_retention_hours: 720,
        }
    }

    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Java clients partition with murmur2; matching it keeps a grid's records in the
            // same partition whichever client wrote them.
            .set("partitioner", "murmur2_random");
        config
    }

    /// Admin client (topic creation, metadata).
    pub fn admin_config(&self, client_id: &str) -> ClientConfig {
        self.finish(self.base(client_id))
    }

    /// Idempotent producer: acks=all, no duplicates on retry, order kept per partition.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4");
        self.finish(config)
    }

    /// Transactional producer; `transactional_id` must be stable for one logical instance so a
    /// restarted instance fences its predecessor.
    pub fn transactional_producer_config(
        &self,
        client_id: &str,
        transactional_id: &str,
    ) -> ClientConfig {
        let mut config = self.producer_config(client_id);
        config
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "30000")
            // Right after a commit the coordinator answers CONCURRENT_TRANSACTIONS while it
            // writes the markers; the default 100 ms retry backoff then stalled every batch.
            .set("retry.backoff.ms", "1")
            .set("retry.backoff.max.ms", "10")
            // librdkafka 2.12 looks for a moved group coordinator (send_offsets_to_transaction)
            // only when some broker connection changes state; with the default 10 s reconnect
            // backoff to a dead broker that took up to 10 s after the broker was gone.
            .set("reconnect.backoff.max.ms", "1000")
            // A broker that hangs (SIGSTOP, a long GC pause) keeps the requests sent to it
            // until they time out — librdkafka's default is 60 s — and a transaction waits for
            // its deliveries, so the router's output stopped for as long as the broker did,
            // although its partitions had moved after the broker session timeout. With a short
            // request timeout the deliveries are retried at the new leaders.
            .set("socket.timeout.ms", ROUTER_REQUEST_TIMEOUT_MS);
        self.finish(config)
    }

    /// Group consumer that sees only committed records and never commits on its own.
    pub fn group_consumer_config(&self, client_id: &str, group_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("group.id", group_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        self.finish(config)
    }

    /// Consumer with manually assigned partitions that reads a topic as a table or log from
    /// the start, committed records only, and reports reaching the end of each partition.
    pub fn reader_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            // librdkafka wants a group id even for assign(); nothing is ever committed with it.
            .set("group.id", format!("{client_id}-reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            // Reaching the end of an idle partition should not wait for data that is not
            // coming: start-up and restore wait for "end of partition" on every partition.
            .set("fetch.wait.max.ms", "20");
        self.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_options_override_typed_settings() {
        let mut args = KafkaArgs::new("b:9092", "t.");
        args.options.push(("acks".into(), "1".into()));
        args.options
            .push(("security.protocol".into(), "SASL_SSL".into()));
        let config = args.producer_config("c");
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn option_parser_rejects_pairs_without_a_key() {
        assert!(parse_option("=x").is_err());
        assert!(parse_option("novalue").is_err());
        assert_eq!(
            parse_option(" a.b = c ").ok(),
            Some(("a.b".into(), "c".into()))
        );
    }

    #[test]
    fn consumers_read_only_committed_records() {
        let args = KafkaArgs::new("b:9092", "t.");
        assert_eq!(
            args.group_consumer_config("c", "g").get("isolation.level"),
            Some("read_committed")
        );
        assert_eq!(
            args.reader_config("c").get("isolation.level"),
            Some("read_committed")
        );
    }
}
