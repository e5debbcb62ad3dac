//! The results of a run: a JSON document (everything), a short markdown summary, and an
//! SVG chart (press -> assigned over time, and its distribution). The SVG is written by hand:
//! two panels of polylines do not justify a plotting dependency.

use crate::load::observer::{PhaseStats, Reconciliation, Second};
use crate::load::procstat::{Sample, Usage};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// p50/p90/p99/p99.9/max of a µs histogram, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p99_9_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": (h.mean() / 10.0).round() / 100.0,
    })
}

fn p(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// One phase as reported.
pub struct PhaseReport {
    pub name: String,
    pub offered_rate: Option<f64>,
    pub sent: u64,
    pub send_s: f64,
    pub max_behind_ms: f64,
    /// From the last event sent to the phase settled (all accounted for and assigned).
    pub drain_s: Option<f64>,
    /// Events accounted for per second, first sent to settled.
    pub throughput_eps: Option<f64>,
    pub stats: PhaseStats,
}

impl PhaseReport {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "offered_rate_eps": self.offered_rate,
            "sent": self.sent,
            "send_s": self.send_s,
            "achieved_send_rate_eps": if self.send_s > 0.0 { self.sent as f64 / self.send_s } else { 0.0 },
            "generator_max_behind_ms": self.max_behind_ms,
            "settled": self.stats.settled(),
            "drain_s": self.drain_s,
            "throughput_eps": self.throughput_eps,
            "expected": self.stats.expected,
            "accounted": self.stats.accounted,
            "opened": self.stats.opened,
            "attached": self.stats.attached,
            "assigned": self.stats.assigned,
            "acknowledged": self.stats.acknowledged,
            "press_to_opened": percentiles(&self.stats.to_opened),
            "press_to_assigned": percentiles(&self.stats.to_assigned),
            "press_to_attached": percentiles(&self.stats.to_attached),
            "press_to_acknowledged": percentiles(&self.stats.to_acknowledged),
        })
    }
}

pub struct Report {
    pub title: String,
    pub header: Value,
    pub phases: Vec<PhaseReport>,
    pub reconciliation: Reconciliation,
    pub extra: Value,
    pub usage: Vec<Usage>,
    pub samples: Vec<Sample>,
    pub seconds: Vec<Second>,
    pub watch: Option<(usize, u64, u64, Histogram<u64>)>,
    pub verdict: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let r = &self.reconciliation;
        let series: Vec<Value> = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let q = |q: f64| {
                    if s.to_assigned.is_empty() {
                        Value::Null
                    } else {
                        json!(s.to_assigned.value_at_quantile(q) as f64 / 1000.0)
                    }
                };
                let sample = self.samples.iter().find(|x| x.at_s as usize == t);
                json!({
                    "t_s": t,
                    "assigned": s.assigned,
                    "output_records": s.output_records,
                    "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0),
                    "lag": sample.and_then(|x| x.lag),
                    "cpu_pct": sample.map(|x| x.processes.iter().map(|p| (p.0.clone(), json!({"cpu_pct": (p.1 * 10.0).round() / 10.0, "rss_mib": p.2.round()}))).collect::<serde_json::Map<_, _>>()),
                })
            })
            .collect();
        json!({
            "header": self.header,
            "verdict": self.verdict,
            "phases": self.phases.iter().map(PhaseReport::to_json).collect::<Vec<_>>(),
            "reconciliation": {
                "clean": r.clean(),
                "sent": r.sent, "accounted": r.accounted, "ignored_as_expected": r.ignored_as_expected,
                "lost": r.lost, "accounted_twice": r.accounted_twice, "wrongly_acted_on": r.wrongly_acted_on,
                "opened_never_assigned": r.opened_never_assigned,
                "duplicate_event_ids": r.duplicate_event_ids, "duplicate_assignments": r.duplicate_assignments,
                "revisions_repeated": r.revisions_repeated, "revisions_skipped": r.revisions_skipped,
                "foreign_records": r.foreign_records,
            },
            "extra": self.extra,
            "resources": self.usage.iter().map(|u| json!({
                "process": u.name, "cpu_avg_pct": (u.cpu_avg_pct * 10.0).round() / 10.0,
                "cpu_max_pct": (u.cpu_max_pct * 10.0).round() / 10.0, "rss_max_mib": u.rss_max_mib.round(),
                "cpu_seconds": (u.cpu_seconds * 100.0).round() / 100.0,
            })).collect::<Vec<_>>(),
            "max_lag": self.samples.iter().filter_map(|s| s.lag).max(),
            "watchers": self.watch.as_ref().map(|(n, updates, failed, h)| json!({
                "streams": n, "updates": updates, "failed": failed, "press_to_delivered": percentiles(h),
            })),
            "series": series,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.title);
        for line in &self.verdict {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(
            md,
            "\n| phase | offered/s | sent | throughput/s | drain s | press→opened p50/p99 ms | press→assigned p50 / p90 / p99 / p99.9 / max ms | press→attached p99 | press→ack p50/p99 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for ph in &self.phases {
            let s = &ph.stats;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} / {} | {} / {} / {} / {} / {} | {} | {} / {} |",
                ph.name,
                ph.offered_rate
                    .map_or("burst".into(), |r| format!("{r:.0}")),
                ph.sent,
                ph.throughput_eps.map_or("-".into(), |t| format!("{t:.0}")),
                ph.drain_s
                    .map_or("not drained".into(), |d| format!("{d:.2}")),
                p(&s.to_opened, 0.5),
                p(&s.to_opened, 0.99),
                p(&s.to_assigned, 0.5),
                p(&s.to_assigned, 0.9),
                p(&s.to_assigned, 0.99),
                p(&s.to_assigned, 0.999),
                p(&s.to_assigned, 1.0),
                p(&s.to_attached, 0.99),
                p(&s.to_acknowledged, 0.5),
                p(&s.to_acknowledged, 0.99),
            );
        }
        let r = &self.reconciliation;
        let _ = writeln!(
            md,
            "\nReconciliation: {} — sent {}, accounted for {}, ignored as expected {}, lost {}, accounted twice {}, duplicate event ids {}, duplicate assignments {}, revisions repeated/skipped {}/{}, opened but never assigned {}.",
            if r.clean() { "clean" } else { "**NOT CLEAN**" },
            r.sent,
            r.accounted,
            r.ignored_as_expected,
            r.lost,
            r.accounted_twice,
            r.duplicate_event_ids,
            r.duplicate_assignments,
            r.revisions_repeated,
            r.revisions_skipped,
            r.opened_never_assigned
        );
        if let Some((n, updates, failed, h)) = &self.watch {
            let _ = writeln!(
                md,
                "\nWatch fan-out: {n} streams, {updates} updates delivered, {failed} failed; press → assigned update at the watcher p50 {} p90 {} p99 {} p99.9 {} max {} ms.",
                p(h, 0.5),
                p(h, 0.9),
                p(h, 0.99),
                p(h, 0.999),
                p(h, 1.0)
            );
        }
        let _ = writeln!(
            md,
            "\n| process | CPU avg % | CPU max % | CPU s | RSS max MiB |\n| --- | --- | --- | --- | --- |"
        );
        for u in &self.usage {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.1} | {:.0} |",
                u.name, u.cpu_avg_pct, u.cpu_max_pct, u.cpu_seconds, u.rss_max_mib
            );
        }
        if let Some(lag) = self.samples.iter().filter_map(|s| s.lag).max() {
            let _ = writeln!(md, "\nLargest consumer lag seen: {lag} records.");
        }
        if !self.extra.is_null() {
            let _ = writeln!(md, "\n```json\n{}\n```", pretty(&self.extra));
        }
        md
    }

    /// Left: p50/p99/max press → assigned per second, with records per second behind.
    /// Right: the whole run's distribution (latency at each percentile, "nines" axis).
    pub fn chart_svg(&self) -> String {
        const W: f64 = 1000.0;
        const H: f64 = 420.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="10" y="16" font-size="13">{}</text>"#,
            escape(&self.title)
        );
        // Panel 1.
        let (x0, y0, pw, ph) = (60.0, 40.0, 560.0, 320.0);
        let n = self.seconds.len().max(2) as f64;
        let max_ms = self
            .seconds
            .iter()
            .filter(|s| !s.to_assigned.is_empty())
            .map(|s| s.to_assigned.value_at_quantile(0.99) as f64 / 1000.0)
            .fold(1.0, f64::max)
            * 1.1;
        let max_rec = self
            .seconds
            .iter()
            .map(|s| s.assigned)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        axes(&mut svg, x0, y0, pw, ph, max_ms, "ms", n - 1.0, "s");
        for (t, s) in self.seconds.iter().enumerate() {
            let h = ph * s.assigned as f64 / max_rec;
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#dde8f5"/>"##,
                x0 + pw * t as f64 / (n - 1.0),
                y0 + ph - h,
                (pw / n).max(1.0)
            );
        }
        for (q, colour, label) in [
            (0.5, "#2b7", "p50"),
            (0.99, "#e80", "p99"),
            (1.0, "#c22", "max"),
        ] {
            let points: Vec<String> = self
                .seconds
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.to_assigned.is_empty())
                .map(|(t, s)| {
                    let v = (s.to_assigned.value_at_quantile(q) as f64 / 1000.0).min(max_ms);
                    format!(
                        "{:.1},{:.1}",
                        x0 + pw * t as f64 / (n - 1.0),
                        y0 + ph - ph * v / max_ms
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{:.0}" y="{:.0}" fill="{colour}">{label}</text>"#,
                points.join(" "),
                x0 + pw + 5.0,
                y0 + 12.0 * (1.0 + q * 2.0)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{x0}" y="{:.0}">press → assigned per second (bars: assigned/s, max {max_rec:.0})</text>"#,
            y0 - 6.0
        );
        // Panel 2.
        let mut all = crate::load::observer::latency_histogram();
        for ph in &self.phases {
            if ph.name != "warm-up" {
                let _ = all.add(&ph.stats.to_assigned);
            }
        }
        let (x1, pw2) = (700.0, 260.0);
        let top = if all.is_empty() {
            1.0
        } else {
            all.max() as f64 / 1000.0 * 1.1
        };
        axes(&mut svg, x1, y0, pw2, ph, top, "ms", 4.0, "nines");
        if !all.is_empty() {
            // x = number of nines: 0 (p0) .. 4 (p99.99).
            let points: Vec<String> = (0..=80)
                .map(|i| {
                    let nines = f64::from(i) / 20.0;
                    let q = 1.0 - 10f64.powf(-nines);
                    let v = all.value_at_quantile(q) as f64 / 1000.0;
                    format!(
                        "{:.1},{:.1}",
                        x1 + pw2 * nines / 4.0,
                        y0 + ph - ph * v / top
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="#36c" stroke-width="2" points="{}"/>"##,
                points.join(" ")
            );
        }
        for (nines, label) in [(1.0, "p90"), (2.0, "p99"), (3.0, "p99.9")] {
            let _ = writeln!(
                svg,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">{label}</text>"#,
                x1 + pw2 * nines / 4.0,
                y0 + ph + 28.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{x1}" y="{:.0}">distribution, whole run (excluding warm-up)</text>"#,
            y0 - 6.0
        );
        svg.push_str("</svg>\n");
        svg
    }
}

#[allow(clippy::too_many_arguments)]
fn axes(
    svg: &mut String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    ymax: f64,
    yu: &str,
    xmax: f64,
    xu: &str,
) {
    let _ = writeln!(
        svg,
        r##"<path d="M{x},{y} V{} H{}" stroke="#444" fill="none"/>"##,
        y + h,
        x + w
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{:.0}" y="{:.0}" text-anchor="end">{:.1}{yu}</text><line x1="{x}" x2="{:.0}" y1="{:.0}" y2="{:.0}" stroke="#eee"/>"##,
            x - 4.0,
            y + h - h * f + 4.0,
            ymax * f,
            x + w,
            y + h - h * f,
            y + h - h * f
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">{:.0}{xu}</text>"#,
            x + w * f,
            y + h + 14.0,
            xmax * f
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
