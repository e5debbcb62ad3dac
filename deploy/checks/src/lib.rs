//! Checks of the deployment files, run as integration tests (`tests/`), so `scripts/test`
//! and CI run them:
//!
//! - `prometheus_rules`: `promtool check rules` and `promtool test rules` on
//!   `deploy/prometheus/`, and that every alert has a test where it fires and one where
//!   it does not.
//! - `grafana`: every PromQL expression of the dashboards names only metrics the services
//!   define (their `telemetry.rs`) or that Kubernetes itself exports.
//! - `kubernetes`: every manifest in `deploy/kubernetes/` parses, core kinds validate
//!   against the Kubernetes schemas, Strimzi kinds against the Strimzi CRDs, and the
//!   HelpGrid-specific rules hold (a topic for every topic the services use, least-privilege
//!   ACLs, probes, resources).
//!
//! Shared helpers live here.

use std::path::PathBuf;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every metric name the services define: the `"helpgrid_…"` string literals of each
/// `services/*/src/telemetry.rs` (one module per service names them all, by the style
/// rules), including names of other helpers' services as they land.
pub fn defined_metric_names() -> Vec<String> {
    let mut names = Vec::new();
    let services = repo_root().join("services");
    let Ok(entries) = std::fs::read_dir(&services) else {
        return names;
    };
    for entry in entries.flatten() {
        let telemetry = entry.path().join("src/telemetry.rs");
        let Ok(source) = std::fs::read_to_string(&telemetry) else {
            continue;
        };
        for piece in source.split('"').skip(1).step_by(2) {
            if piece.starts_with("helpgrid_")
                && piece
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(piece.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Whether `series` (a name in a query) is one of `defined`: histograms also export
/// `_bucket`, `_sum` and `_count`.
pub fn is_defined(series: &str, defined: &[String]) -> bool {
    defined.iter().any(|name| {
        series == name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| series.strip_suffix(suffix) == Some(name.as_str()))
    })
}

/// The metric names a PromQL expression reads: identifiers not followed by `(` (functions)
/// and not PromQL keywords, label names or label values.
pub fn metric_names_in(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        // Aggregations may put their grouping before the parenthesis: `sum by (x) (…)`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let mut in_braces = 0usize;
    let mut in_parens_after_grouping = false;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            '"' | '\'' => {
                // Skip a string (label values, regexes).
                i += 1;
                while i < bytes.len() && bytes[i] as char != c {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            '{' => in_braces += 1,
            '}' => in_braces = in_braces.saturating_sub(1),
            '[' => {
                // Skip a range or subquery duration.
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
            }
            ')' => in_parens_after_grouping = false,
            _ => {}
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            let rest = expr[i..].trim_start();
            let is_call = rest.starts_with('(');
            let grouping = matches!(
                word,
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            );
            if grouping {
                in_parens_after_grouping = true;
            } else if in_braces == 0
                && !in_parens_after_grouping
                && !is_call
                && !KEYWORDS.contains(&word)
                && !word.starts_with('$')
            {
                names.push(word.to_owned());
            }
            continue;
        }
        i += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_read_from_promql_without_functions_labels_or_keywords() {
        let expr = r#"histogram_quantile(0.99, sum by (le, instance) (rate(helpgrid_router_time_to_assign_seconds_bucket{job="helpgrid-router", topic=~"a|b"}[5m]))) > 0 and on (instance) up == 1"#;
        assert_eq!(
            metric_names_in(expr),
            vec!["helpgrid_router_time_to_assign_seconds_bucket", "up"]
        );
    }

    #[test]
    fn histogram_series_count_as_their_metric() {
        let defined = vec!["helpgrid_router_time_to_assign_seconds".to_owned()];
        assert!(is_defined(
            "helpgrid_router_time_to_assign_seconds_count",
            &defined
        ));
        assert!(!is_defined("helpgrid_router_time_to_assign", &defined));
    }
}
