//! A webhook receiver to start from: checks the signature and the timestamp, recognises
//! repeats by their idempotency key, and prints each new notification as one JSON line on
//! stdout. A batched request (subscription `batch_max` > 1, header `x-helpgrid-batch`) is
//! taken apart: each notification in it is checked for repeats and printed on its own. Point a subscription at it, or try it by hand with curl (services/notify/README.md).
//!
//!   helpgrid-webhook-example --listen 127.0.0.1:8099 --secret-file hook.secret

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use helpgrid_notify::domain::signature::{
    BATCH_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify,
};
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Parser)]
#[command(
    name = "helpgrid-webhook-example",
    version,
    about = "Example HelpGrid webhook receiver: verifies signatures, drops repeats, prints notifications"
)]
struct Args {
    /// Address to listen on (any path accepts POST).
    #[arg(
        long,
        env = "HELPGRID_WEBHOOK_LISTEN",
        default_value = "127.0.0.1:8099"
    )]
    listen: SocketAddr,
    /// File with the subscription's secret (surrounding whitespace ignored).
    #[arg(long, env = "HELPGRID_WEBHOOK_SECRET_FILE")]
    secret_file: PathBuf,
    /// Refuse requests whose timestamp is further than this from our clock (replays).
    #[arg(long, env = "HELPGRID_WEBHOOK_TOLERANCE_S", default_value_t = 300)]
    tolerance_s: i64,
    /// Answer 503 to the first N requests (to watch HelpGrid retry).
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
}

/// Idempotency keys seen, the oldest forgotten first (bounded memory).
struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

struct Receiver {
    secret: Vec<u8>,
    tolerance_s: i64,
    fail_left: Mutex<u32>,
    seen: Mutex<Seen>,
}

const REMEMBERED_KEYS: usize = 100_000;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    {
        let mut left = r.fail_left.lock().unwrap_or_else(|e| e.into_inner());
        if *left > 0 {
            *left -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "failing on purpose (--fail-first)\n",
            );
        }
    }
    let (Some(timestamp), Some(signature)) = (
        header(&headers, TIMESTAMP_HEADER),
        header(&headers, SIGNATURE_HEADER),
    ) else {
        return (
            StatusCode::UNAUTHORIZED,
            "missing x-helpgrid-timestamp or x-helpgrid-signature\n",
        );
    };
    if !verify(&r.secret, timestamp, &body, signature) {
        return (StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match timestamp.parse::<i64>() {
        Ok(t) if (now - t).abs() <= r.tolerance_s => {}
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "timestamp too old or too new (replay?)\n",
            );
        }
    }
    // (key, the notification as it came)
    let notifications: Vec<(String, Vec<u8>)> = if header(&headers, BATCH_HEADER).is_some() {
        let Ok(batch) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return (StatusCode::BAD_REQUEST, "batch body is not JSON\n");
        };
        let Some(items) = batch["notifications"].as_array() else {
            return (StatusCode::BAD_REQUEST, "batch body has no notifications\n");
        };
        items
            .iter()
            .map(|n| {
                let key = n["idempotency_key"].as_str().unwrap_or_default().to_owned();
                (key, n.to_string().into_bytes())
            })
            .collect()
    } else {
        let key = header(&headers, IDEMPOTENCY_HEADER).unwrap_or_default();
        vec![(key.to_owned(), body.to_vec())]
    };
    let mut new = 0;
    let mut out = std::io::stdout().lock();
    for (key, notification) in notifications {
        {
            let mut seen = r.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.keys.insert(key.clone()) {
                continue;
            }
            seen.order.push_back(key);
            if seen.order.len() > REMEMBERED_KEYS
                && let Some(old) = seen.order.pop_front()
            {
                seen.keys.remove(&old);
            }
        }
        new += 1;
        let _ = out.write_all(&notification);
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    if new == 0 {
        return (StatusCode::OK, "duplicate, already handled\n");
    }
    (StatusCode::OK, "ok\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    helpgrid_common::telemetry::init_tracing();
    let args = Args::parse();
    let secret = std::fs::read(&args.secret_file)
        .with_context(|| format!("cannot read {}", args.secret_file.display()))?;
    let receiver = Arc::new(Receiver {
        secret: secret.trim_ascii().to_vec(),
        tolerance_s: args.tolerance_s,
        fail_left: Mutex::new(args.fail_first),
        seen: Mutex::new(Seen {
            keys: HashSet::new(),
            order: VecDeque::new(),
        }),
    });
    let app = Router::new().fallback(post(receive)).with_state(receiver);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "webhook receiver listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(helpgrid_common::shutdown::signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_answers_version_and_every_flag_has_help() {
        use clap::CommandFactory;
        assert_eq!(
            helpgrid_common::cli::undocumented(&super::Args::command()),
            Vec::<String>::new()
        );
    }
}
