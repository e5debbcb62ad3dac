//! gRPC over TLS with a certificate and key from files: a client that trusts the certificate
//! gets answers; a plaintext client gets none.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_auth::{Bearer, Role};
use helpgrid_proto::pb::GetIncidentRequest;
use helpgrid_proto::pb::incident_service_client::IncidentServiceClient;
use helpgrid_status::config::{StatusConfig, TlsFiles};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{TestKafka, test_key, token, within};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A throwaway CA and a certificate it signed for localhost/127.0.0.1, made with the openssl
/// command (the same steps the README shows). Returns (CA cert, server cert, server key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let file = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("the openssl command (Debian: openssl)");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=HelpGrid test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        file("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (file("ca.pem"), file("server.pem"), file("server.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_is_served_over_tls_from_certificate_files() {
    let kafka = TestKafka::new().await;
    let dir = std::env::temp_dir().join(format!("helpgrid-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates(&dir);
    let mut config = StatusConfig::new(kafka.args.clone()).with_auth(test_key());
    config.tls = Some(TlsFiles::read(&cert, &key).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(helpgrid_status::run(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    within("SERVING over TLS", async {
        loop {
            let health = HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await;
            if health.is_ok_and(|h| h.get_ref().status == ServingStatus::Serving as i32) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let bearer = Bearer::new(&token("r1", Role::Responder, &["*"])).unwrap();
    let missing = IncidentServiceClient::with_interceptor(channel, bearer)
        .get_incident(GetIncidentRequest {
            incident_id: "in-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "an answer over TLS");

    let plaintext = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let refused = HealthClient::new(plaintext)
        .check(HealthCheckRequest::default())
        .await;
    assert!(
        refused.is_err(),
        "plaintext gets no answer from a TLS server"
    );

    stop.cancel();
    within("the server to stop", server).await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
