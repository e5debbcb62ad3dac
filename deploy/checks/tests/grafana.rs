//! The Grafana dashboard (`deploy/grafana/helpgrid-dashboard.json`) is valid JSON in the
//! shape Grafana provisions, and every PromQL expression in it reads only metrics the
//! services define in their `telemetry.rs` (or that the kubelet exports), so a renamed
//! metric fails here instead of leaving an empty panel.

use helpgrid_deploy_checks::{defined_metric_names, is_defined, metric_names_in, repo_root};
use serde_json::Value;

/// Series Kubernetes exports for every container (the kubelet's cAdvisor).
const KUBERNETES: &[&str] = &[
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
];

fn dashboard() -> Value {
    let path = repo_root().join("deploy/grafana/helpgrid-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("deploy/grafana/helpgrid-dashboard.json");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

#[test]
fn the_dashboard_has_the_shape_grafana_provisions() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "helpgrid-overview");
    assert!(dashboard["title"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let mut ids = Vec::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(!ids.contains(&id), "panel id {id} is used twice");
        ids.push(id);
        let pos = &panel["gridPos"];
        for key in ["x", "y", "w", "h"] {
            assert!(pos[key].is_u64(), "panel {id} lacks gridPos.{key}");
        }
        assert!(
            pos["x"].as_u64().unwrap_or(99) + pos["w"].as_u64().unwrap_or(99) <= 24,
            "panel {id} is wider than the grid"
        );
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {id} has no query");
        }
    }
}

#[test]
fn every_expression_reads_only_metrics_the_services_define() {
    let defined = defined_metric_names();
    assert!(
        defined
            .iter()
            .any(|n| n == "helpgrid_status_grpc_requests_total"),
        "the status service's metric names were not found: {defined:?}"
    );
    let dashboard = dashboard();
    let mut read = Vec::new();
    let mut unknown = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let names = metric_names_in(expr);
            assert!(!names.is_empty(), "no metric found in {expr}");
            for name in names {
                if !is_defined(&name, &defined) && !KUBERNETES.contains(&name.as_str()) {
                    unknown.push(format!("{name} (panel {:?})", panel["title"]));
                }
                read.push(name);
            }
        }
    }
    assert_eq!(unknown, Vec::<String>::new(), "metrics no service defines");
    // What the issue asks the dashboard to show.
    for needed in [
        "helpgrid_router_records_in_total",
        "helpgrid_router_time_to_assign_seconds_bucket",
        "helpgrid_router_time_to_acknowledge_seconds_bucket",
        "helpgrid_router_time_to_close_seconds_bucket",
        "helpgrid_router_escalations_total",
        "helpgrid_router_consumer_lag",
        "helpgrid_router_transaction_seconds_bucket",
        "helpgrid_router_dead_letters_total",
        "helpgrid_gateway_maintenance_reports_total",
        "helpgrid_gateway_devices",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
    ] {
        assert!(read.iter().any(|n| n == needed), "no panel reads {needed}");
    }
}
