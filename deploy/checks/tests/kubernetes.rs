//! The manifests in `deploy/kubernetes/`, offline: every document parses; core kinds
//! validate against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), Strimzi
//! kinds against Strimzi's own CRD schemas (trimmed copies in `tests/fixtures/strimzi/`, made
//! strict: an unknown field fails); then HelpGrid's rules hold — a KafkaTopic for every topic
//! the services' code names, compacted where it must be, co-partitioned grid topics,
//! least-privilege KafkaUsers, a router StatefulSet with /readyz and /livez, resources,
//! PodDisruptionBudgets and a default-deny NetworkPolicy. The KafkaUsers grant exactly what
//! `deploy/local/kafka-acls.sh` grants (what the SASL/ACL run proves), so the two cannot
//! drift. The validators are stock Python packages from PyPI, pinned, in
//! `target/python/kubernetes`.

use helpgrid_deploy_checks::repo_root;
use helpgrid_testkit::python;

const VALIDATORS: &[&str] = &[
    "pyyaml==6.0.3",
    "jsonschema==4.26.0",
    "kubernetes-validate==1.37.0",
];
/// The Kubernetes version the manifests target (policy/v1 PDBs, gRPC probes).
const KUBERNETES: &str = "1.33";

fn manifest(name: &str) -> String {
    repo_root()
        .join("deploy/kubernetes")
        .join(name)
        .display()
        .to_string()
}

/// Topic names (without prefix) the services' code uses: `format!("{prefix}<name>")` in
/// `services/common/src/topics.rs`.
fn topics_in_code() -> Vec<String> {
    let source = std::fs::read_to_string(repo_root().join("services/common/src/topics.rs"))
        .expect("services/common/src/topics.rs");
    source
        .split("format!(\"{prefix}")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_and_strimzi_schemas() {
    let python = python::venv("kubernetes", VALIDATORS);
    let validator = repo_root().join("deploy/checks/tests/validate_manifests.py");
    let schemas = repo_root().join("deploy/checks/tests/fixtures/strimzi");
    let out = python::run_script(
        &python,
        &validator,
        &[
            &schemas.display().to_string(),
            KUBERNETES,
            &manifest("strimzi.yaml"),
            &manifest("helpgrid.yaml"),
        ],
    );
    assert!(!out.contains("FAILED"), "{out}");
    for kind in [
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaUser",
        "StatefulSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok ") && l.split(' ').nth(2) == Some(kind)),
            "no {kind} validated:\n{out}"
        );
    }
    let documents: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("documents "))
        .and_then(|n| n.parse().ok())
        .expect("the validator's count");
    assert_eq!(
        documents,
        out.lines().filter(|l| l.starts_with("ok ")).count()
    );
}

#[test]
fn a_misspelled_field_fails_the_validation() {
    // The validator must refuse what Kubernetes or Strimzi would not take as meant.
    let python = python::venv("kubernetes", VALIDATORS);
    let dir = std::env::temp_dir().join(format!("helpgrid-bad-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kafka.strimzi.io/v1\nkind: KafkaTopic\nmetadata: {name: x}\nspec: {partitons: 3}\n",
    )
    .expect("write");
    let output = std::process::Command::new(&python)
        .arg(repo_root().join("deploy/checks/tests/validate_manifests.py"))
        .arg(repo_root().join("deploy/checks/tests/fixtures/strimzi"))
        .arg(KUBERNETES)
        .arg(&bad)
        .output()
        .expect("python");
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("'partitons' was unexpected"), "{out}");
}

#[test]
fn the_manifests_follow_helpgrids_rules() {
    let topics = topics_in_code();
    assert!(
        topics.iter().any(|t| t == "help-events"),
        "no topic names found in topics.rs: {topics:?}"
    );
    let python = python::venv("kubernetes", VALIDATORS);
    let rules = repo_root().join("deploy/checks/tests/helpgrid_manifest_rules.py");
    let mut args = vec![manifest("strimzi.yaml"), manifest("helpgrid.yaml")];
    args.extend(topics);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python::run_script(&python, &rules, &args);
    assert!(!out.contains("FAILED"), "{out}");
    for rule in [
        "ok router writes only incident-events, incident-state, dead-letters and forwarded input",
        "ok status writes only commands, roster, revocations (admin RevokeTokens) and app-links",
        "ok gateway writes only help-events, devices and dead-letters",
        "ok archive writes only dead-letters and reads incident-events",
        "ok notify writes only notify-subscriptions and dead-letters and reads incident-events",
        "ok the router is ready only on /readyz and alive on /livez",
        "ok grid-keyed topics are co-partitioned",
        "ok ingress is denied unless a policy allows it",
    ] {
        assert!(out.contains(rule), "rule not checked: {rule}\n{out}");
    }
}

fn users_match_acls(python: &std::path::Path, strimzi: &str, acls: &str) -> std::process::Output {
    std::process::Command::new(python)
        .arg(repo_root().join("deploy/checks/tests/kafka_users_match_acls.py"))
        .arg(strimzi)
        .arg(acls)
        .output()
        .expect("python")
}

#[test]
fn the_kafka_users_grant_exactly_what_the_sasl_run_proved() {
    let python = python::venv("kubernetes", VALIDATORS);
    let acls = repo_root().join("deploy/local/kafka-acls.sh");
    let output = users_match_acls(
        &python,
        &manifest("strimzi.yaml"),
        &acls.display().to_string(),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for service in ["router", "status", "gateway", "archive", "notify"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("ok {service}: "))),
            "{service} not compared:\n{out}"
        );
    }
}

#[test]
fn a_grant_only_in_kafka_acls_sh_fails_the_comparison() {
    // The comparison must catch drift: the router losing its forwarding right on one side.
    let python = python::venv("kubernetes", VALIDATORS);
    let source = std::fs::read_to_string(repo_root().join("deploy/local/kafka-acls.sh"))
        .expect("kafka-acls.sh");
    let line = "run allow router Read,Write,Describe,DescribeConfigs help-events\n";
    assert!(
        source.contains(line),
        "the router's help-events grant moved"
    );
    let drifted = source.replace(
        line,
        "run allow router Read,Describe,DescribeConfigs help-events\n",
    );
    let dir = std::env::temp_dir().join(format!("helpgrid-drifted-acls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("kafka-acls.sh");
    std::fs::write(&path, drifted).expect("write");
    let output = users_match_acls(
        &python,
        &manifest("strimzi.yaml"),
        &path.display().to_string(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains(
            "FAILED router: KafkaUser only [('topic', 'help-events', 'literal', 'Write')]"
        ),
        "{out}"
    );
}
