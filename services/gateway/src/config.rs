//! The gateway's settings: command-line flags, each with an environment variable.

use crate::domain::feedback::FeedbackPayloads;
use crate::domain::frigate::CameraRules;
use crate::domain::health::HealthPolicy;
use crate::domain::z2m::ActionMap;
use helpgrid_common::kafka::KafkaArgs;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "helpgrid-gateway",
    version,
    about = "Turns Zigbee2MQTT buttons, Frigate cameras and signed HTTP devices into HelpGrid help events"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Registers (or updates) devices from a CSV file on the devices topic, then exits.
    /// Nothing is written if any row is bad; every bad row is listed.
    ImportDevices {
        /// The CSV file (header row: device_id,kind,grid_id,household_id,camera_post,
        /// latitude,longitude,enabled,credential_ref,mqtt_name,model).
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// MQTT broker, `mqtt://host:port`. Without it the gateway serves HTTP devices only.
    #[arg(long, env = "HELPGRID_GATEWAY_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// MQTT user name.
    #[arg(long, env = "HELPGRID_GATEWAY_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "HELPGRID_GATEWAY_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// MQTT client id: stable across restarts, so the broker keeps this gateway's session and
    /// redelivers the QoS 1 presses it had not acknowledged. Default: `<topic prefix>gateway`.
    #[arg(long, env = "HELPGRID_GATEWAY_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Zigbee2MQTT base topic (its `mqtt.base_topic`).
    #[arg(
        long,
        env = "HELPGRID_GATEWAY_Z2M_BASE_TOPIC",
        default_value = "zigbee2mqtt"
    )]
    pub z2m_base_topic: String,
    /// Frigate topic prefix (its `mqtt.topic_prefix`).
    #[arg(
        long,
        env = "HELPGRID_GATEWAY_FRIGATE_PREFIX",
        default_value = "frigate"
    )]
    pub frigate_prefix: String,
    /// Zigbee2MQTT action → press kind, `action=help|urgent|medical|ignore`; repeat the flag
    /// or separate with `,`. Added to the defaults (single → help, double → medical,
    /// long/hold → urgent, release → ignore).
    #[arg(
        long = "action",
        env = "HELPGRID_GATEWAY_ACTIONS",
        value_delimiter = ','
    )]
    pub actions: Vec<String>,
    /// Frigate object (and zone) → HelpGrid label, `object[@zone|@*]=label`; repeat or separate
    /// with `,`. Replaces the defaults (fire=fire, smoke=fire, person@*=intrusion).
    #[arg(
        long = "camera-rule",
        env = "HELPGRID_GATEWAY_CAMERA_RULES",
        value_delimiter = ','
    )]
    pub camera_rules: Vec<String>,
    /// Without `last_seen` in Zigbee2MQTT messages, presses of one button within this many
    /// seconds share an event id (so a redelivery is recognised).
    #[arg(
        long,
        env = "HELPGRID_GATEWAY_Z2M_DEDUP_BUCKET_S",
        default_value_t = 10
    )]
    pub z2m_dedup_bucket_s: u32,
    /// Serve signed HTTP for cellular buttons and NVRs on this address.
    #[arg(long, env = "HELPGRID_GATEWAY_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Device credentials: a file of `credential_ref secret` lines (the registry names the
    /// ref; secrets never travel on Kafka).
    #[arg(long, env = "HELPGRID_GATEWAY_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// Signed requests this far from the gateway's clock are refused (seconds).
    #[arg(long, env = "HELPGRID_GATEWAY_REPLAY_WINDOW_S", default_value_t = 300)]
    pub replay_window_s: u32,
    /// Largest HTTP body accepted (bytes).
    #[arg(long, env = "HELPGRID_GATEWAY_MAX_BODY_BYTES", default_value_t = 4096)]
    pub max_body_bytes: usize,
    /// Requests one HTTP device may make at once ...
    #[arg(long, env = "HELPGRID_GATEWAY_RATE_BURST", default_value_t = 5)]
    pub rate_burst: u32,
    /// ... and per minute after that.
    #[arg(long, env = "HELPGRID_GATEWAY_RATE_PER_MINUTE", default_value_t = 12)]
    pub rate_per_minute: u32,
    /// Serve Prometheus metrics, /livez and /readyz on this address.
    #[arg(long, env = "HELPGRID_GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// A Zigbee button silent this long needs maintenance (seconds; 0 = never).
    #[arg(
        long,
        env = "HELPGRID_GATEWAY_SILENCE_ZIGBEE_BUTTON_S",
        default_value_t = 14_400
    )]
    pub silence_zigbee_button_s: u64,
    /// A battery under this percentage needs replacing.
    #[arg(
        long,
        env = "HELPGRID_GATEWAY_LOW_BATTERY_PERCENT",
        default_value_t = 15
    )]
    pub low_battery_percent: u8,
    /// Payload on a Zigbee2MQTT device's `set` topic, `MODEL:STAGE=PAYLOAD` (stage: assigned,
    /// acknowledged, closed; model `*` for every model); repeat the flag or separate with `;`.
    #[arg(
        long = "feedback",
        env = "HELPGRID_GATEWAY_FEEDBACK",
        value_delimiter = ';'
    )]
    pub feedback: Vec<String>,
    /// Serve the admin-only gRPC DeviceService on this address (needs --token-key).
    #[arg(long, env = "HELPGRID_GATEWAY_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// File with the secret that signs bearer tokens (the status service's; helpgrid-token).
    #[arg(long, env = "HELPGRID_GATEWAY_TOKEN_KEY")]
    pub token_key: Option<PathBuf>,
    /// How often silence is checked (milliseconds).
    #[arg(
        long,
        env = "HELPGRID_GATEWAY_HEALTH_CHECK_MS",
        default_value_t = 30_000
    )]
    pub health_check_ms: u64,
}

/// An MQTT broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
}

/// Everything `run` needs, already checked.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub kafka: KafkaArgs,
    pub mqtt: Option<MqttConfig>,
    pub z2m_base_topic: String,
    pub frigate_prefix: String,
    pub actions: ActionMap,
    pub camera_rules: CameraRules,
    pub z2m_dedup_bucket_ms: i64,
    pub http_listen: Option<SocketAddr>,
    pub credentials: HashMap<String, Vec<u8>>,
    pub replay_window_ms: i64,
    pub max_body_bytes: usize,
    pub rate_burst: u32,
    pub rate_per_minute: u32,
    pub metrics_listen: Option<SocketAddr>,
    pub health: HealthPolicy,
    pub health_check_ms: u64,
    pub feedback: FeedbackPayloads,
    /// The DeviceService address and the key its admin tokens are checked with.
    pub grpc: Option<(SocketAddr, std::sync::Arc<helpgrid_auth::TokenKey>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--mqtt-url {0:?}: expected mqtt://host:port")]
    MqttUrl(String),
    #[error("--action: {0}")]
    Action(String),
    #[error("--camera-rule: {0}")]
    CameraRule(String),
    #[error("--grpc-listen needs --token-key (the DeviceService is admin-only)")]
    GrpcWithoutKey,
    #[error("--token-key: {0}")]
    TokenKey(String),
    #[error("--feedback: {0}")]
    Feedback(String),
    #[error("cannot read the credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file line {0}: expected `credential_ref secret`")]
    CredentialLine(usize),
}

/// `mqtt://host:port` (port 1883 when absent).
pub fn parse_mqtt_url(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (rest, 1883),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// `credential_ref secret` (or `ref=secret`) per line; `#` comments.
pub fn parse_credentials(text: &str) -> Result<HashMap<String, Vec<u8>>, ConfigError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, secret) = line
            .split_once(char::is_whitespace)
            .or_else(|| line.split_once('='))
            .ok_or(ConfigError::CredentialLine(i + 1))?;
        let (name, secret) = (name.trim(), secret.trim());
        if name.is_empty() || secret.is_empty() {
            return Err(ConfigError::CredentialLine(i + 1));
        }
        out.insert(name.to_owned(), secret.as_bytes().to_vec());
    }
    Ok(out)
}

impl GatewayArgs {
    pub fn into_config(self) -> Result<GatewayConfig, ConfigError> {
        let mqtt = match &self.mqtt_url {
            None => None,
            Some(url) => {
                let (host, port) =
                    parse_mqtt_url(url).ok_or_else(|| ConfigError::MqttUrl(url.clone()))?;
                Some(MqttConfig {
                    host,
                    port,
                    username: self.mqtt_username.clone(),
                    password: self.mqtt_password.clone(),
                    client_id: self
                        .mqtt_client_id
                        .clone()
                        .unwrap_or_else(|| format!("{}gateway", self.kafka.topic_prefix)),
                })
            }
        };
        let mut actions = ActionMap::default();
        for rule in &self.actions {
            actions.apply_rule(rule).map_err(ConfigError::Action)?;
        }
        let camera_rules = if self.camera_rules.is_empty() {
            CameraRules::default()
        } else {
            CameraRules::parse(&self.camera_rules).map_err(ConfigError::CameraRule)?
        };
        let mut feedback = FeedbackPayloads::default();
        for rule in &self.feedback {
            feedback.apply_rule(rule).map_err(ConfigError::Feedback)?;
        }
        let grpc = match (self.grpc_listen, &self.token_key) {
            (None, _) => None,
            (Some(_), None) => return Err(ConfigError::GrpcWithoutKey),
            (Some(addr), Some(path)) => Some((
                addr,
                std::sync::Arc::new(
                    helpgrid_auth::TokenKey::from_file(path)
                        .map_err(|e| ConfigError::TokenKey(e.to_string()))?,
                ),
            )),
        };
        let credentials = match &self.credentials {
            None => HashMap::new(),
            Some(path) => parse_credentials(&std::fs::read_to_string(path).map_err(|source| {
                ConfigError::Credentials {
                    path: path.clone(),
                    source,
                }
            })?)?,
        };
        Ok(GatewayConfig {
            kafka: self.kafka,
            mqtt,
            z2m_base_topic: self.z2m_base_topic.trim_end_matches('/').to_owned(),
            frigate_prefix: self.frigate_prefix.trim_end_matches('/').to_owned(),
            actions,
            camera_rules,
            z2m_dedup_bucket_ms: i64::from(self.z2m_dedup_bucket_s.max(1)) * 1000,
            http_listen: self.http_listen,
            credentials,
            replay_window_ms: i64::from(self.replay_window_s) * 1000,
            max_body_bytes: self.max_body_bytes,
            rate_burst: self.rate_burst,
            rate_per_minute: self.rate_per_minute,
            metrics_listen: self.metrics_listen,
            health: HealthPolicy {
                zigbee_button_silence_ms: (self.silence_zigbee_button_s.min(i64::MAX as u64 / 1000)
                    * 1000) as i64,
                low_battery_percent: self.low_battery_percent,
            },
            health_check_ms: self.health_check_ms.max(10),
            feedback,
            grpc,
        })
    }
}

impl GatewayConfig {
    /// Settings for tests: the given Kafka settings, no MQTT, no HTTP, defaults otherwise.
    pub fn new(kafka: KafkaArgs) -> Self {
        Self {
            kafka,
            mqtt: None,
            z2m_base_topic: "zigbee2mqtt".into(),
            frigate_prefix: "frigate".into(),
            actions: ActionMap::default(),
            camera_rules: CameraRules::default(),
            z2m_dedup_bucket_ms: 10_000,
            http_listen: None,
            credentials: HashMap::new(),
            replay_window_ms: 300_000,
            max_body_bytes: 4096,
            rate_burst: 5,
            rate_per_minute: 12,
            metrics_listen: None,
            health: HealthPolicy::default(),
            health_check_ms: 30_000,
            feedback: FeedbackPayloads::default(),
            grpc: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:18830"),
            Some(("127.0.0.1".into(), 18830))
        );
        assert_eq!(
            parse_mqtt_url("mqtt://broker"),
            Some(("broker".into(), 1883))
        );
        assert_eq!(parse_mqtt_url("http://broker"), None);
        assert_eq!(parse_mqtt_url("mqtt://:1883"), None);
        assert_eq!(parse_mqtt_url("mqtt://b:port"), None);
    }

    #[test]
    fn credentials_file() {
        let c = parse_credentials("# devices\ncred-1 s3cret\ncred-2=other\n\n").expect("parses");
        assert_eq!(c.get("cred-1").map(Vec::as_slice), Some(&b"s3cret"[..]));
        assert_eq!(c.get("cred-2").map(Vec::as_slice), Some(&b"other"[..]));
        assert!(matches!(
            parse_credentials("lonely\n"),
            Err(ConfigError::CredentialLine(1))
        ));
    }
}
