//! The alerting rules in `deploy/prometheus/`: `promtool check rules` accepts them,
//! `promtool test rules` passes their unit tests, every alert has a unit test where it fires
//! and one where it stays quiet, and every metric they read is defined by a service (or is
//! listed below as being added by a service in progress). promtool comes with Debian's
//! `prometheus` package (scripts/lib/packages.sh installs it).

use helpgrid_deploy_checks::{defined_metric_names, is_defined, metric_names_in, repo_root};
use std::process::Command;

/// Metrics the rules read that their services are adding now; each is named in
/// deploy/prometheus/README.md. Once a service defines one, it simply counts as defined.
const BEING_ADDED: &[&str] = &[];
/// Prometheus's own series.
const PROMETHEUS: &[&str] = &["up"];

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo_root().join("deploy/prometheus"))
        .output()
        .expect("promtool (Debian: apt-get install prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn rules() -> String {
    std::fs::read_to_string(repo_root().join("deploy/prometheus/helpgrid-alerts.yml"))
        .expect("deploy/prometheus/helpgrid-alerts.yml")
}

fn tests() -> String {
    std::fs::read_to_string(repo_root().join("deploy/prometheus/helpgrid-alerts.test.yml"))
        .expect("deploy/prometheus/helpgrid-alerts.test.yml")
}

/// `alert: Name` lines of the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "helpgrid-alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "helpgrid-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_test_where_it_fires_and_one_where_it_does_not() {
    let tests = tests();
    // Each `alertname:` line is followed (within its eval block) by `exp_alerts: []` when
    // the alert must stay quiet, or by a list of expected alerts when it must fire.
    let lines: Vec<&str> = tests.lines().collect();
    let mut fires = Vec::new();
    let mut quiet = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if let Some(name) = line.trim().strip_prefix("alertname: ") {
            let expectation = lines[n + 1].trim();
            if expectation == "exp_alerts: []" {
                quiet.push(name.trim().to_owned());
            } else if expectation == "exp_alerts:" {
                fires.push(name.trim().to_owned());
            }
        }
    }
    let alerts = alert_names(&rules());
    assert!(alerts.len() >= 7, "too few alerts found: {alerts:?}");
    for alert in &alerts {
        assert!(
            fires.contains(alert),
            "{alert}: no unit test where it fires"
        );
        assert!(
            quiet.contains(alert),
            "{alert}: no unit test where it stays quiet"
        );
    }
}

#[test]
fn the_rules_read_only_metrics_the_services_define() {
    let defined = defined_metric_names();
    assert!(
        defined.iter().any(|n| n == "helpgrid_router_consumer_lag"),
        "the router's metric names were not found: {defined:?}"
    );
    let rules = rules();
    let mut unknown = Vec::new();
    for expr in rules.split("expr: |").skip(1) {
        // The expression is the indented block after `expr: |`, up to `for:`/`labels:`.
        let body: String = expr
            .lines()
            .skip(1)
            .take_while(|l| {
                let t = l.trim_start();
                !(t.starts_with("for:") || t.starts_with("labels:"))
            })
            .collect::<Vec<_>>()
            .join(" ");
        for name in metric_names_in(&body) {
            let known = is_defined(&name, &defined)
                || BEING_ADDED.contains(&name.as_str())
                || PROMETHEUS.contains(&name.as_str());
            if !known {
                unknown.push(name);
            }
        }
    }
    assert_eq!(unknown, Vec::<String>::new(), "metrics no service defines");
}
