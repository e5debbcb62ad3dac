//! History and report queries over 10,000,000 archived incidents: `scripts/bench-archive-queries`
//! (ignored in the normal run). The incidents are generated inside PostgreSQL
//! (`bench_data/generate_incidents.sql`: the simulated city's 13,000 grids, one year), once per
//! database: a rerun against the same server reuses them. Each case runs the archive's own
//! query functions (the SQL the gRPC API sends) `ARCHIVE_QUERY_BENCH_RUNS` times (200; reports
//! `ARCHIVE_QUERY_BENCH_REPORT_RUNS`, 200; each report's baseline computed from the incidents
//! alone `ARCHIVE_QUERY_BENCH_BASELINE_RUNS`, 5) after a warm-up and prints p50 / p99 / max; the
//! EXPLAIN (ANALYZE, BUFFERS) of every statement goes to target/artifacts/archive-query-plans.txt.
#![allow(clippy::unwrap_used)]

mod support;

use helpgrid_archive::access::{Caller, GridFilter};
use helpgrid_archive::queries::{self, Statement};
use helpgrid_archive::requests::{Bucket, HistoryQuery, Period, ReportQuery};
use helpgrid_archive::{schema, store};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use support::{server_url, with_database};

/// The generated history ends here (2025-11-30 00:00 UTC) and starts 365 days before.
const END_MS: i64 = 1_764_460_800_000;
const DAY_MS: i64 = 86_400_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn generated_database(incidents: i64) -> String {
    let server = server_url();
    let name = format!("bench_incidents_{incidents}");
    let admin = store::connect(&server).await.unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    let url = with_database(&server, &name);
    let mut db = store::connect(&url).await.unwrap();
    schema::migrate(&mut db).await.unwrap();
    let have: i64 = db
        .query_one("SELECT count(*) FROM incidents", &[])
        .await
        .unwrap()
        .get(0);
    if have != incidents {
        println!("generating {incidents} incidents in {name} (once; minutes)…");
        let started = Instant::now();
        db.batch_execute("TRUNCATE incidents, areas").await.unwrap();
        let sql = include_str!("bench_data/generate_incidents.sql")
            .replace("$N$", &incidents.to_string())
            .replace("$END$", &END_MS.to_string());
        db.batch_execute(&sql).await.unwrap();
        println!("generated in {:.0} s", started.elapsed().as_secs_f64());
        // The rows were inserted directly, not by the sink: the rollup is built as migration
        // 5 builds it for an existing archive (and timed: that is the migration's cost).
        let started = Instant::now();
        db.batch_execute("SELECT archive_rollup_build(NULL)")
            .await
            .unwrap();
        println!(
            "rollup built in {:.0} s (migration 5 on this archive)",
            started.elapsed().as_secs_f64()
        );
    }
    // As autovacuum would after the sink's inserts: statistics, and the visibility map that
    // lets index-only scans skip the table (quick when already done).
    db.batch_execute("VACUUM (ANALYZE) incidents")
        .await
        .unwrap();
    db.batch_execute("ANALYZE areas, incident_rollup, incident_rollup_kinds")
        .await
        .unwrap();
    url
}

struct Case {
    name: &'static str,
    runs: usize,
    run: Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = usize>>>>,
    statements: Vec<Statement>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with scripts/bench-archive-queries"]
async fn history_and_report_queries_over_ten_million_incidents() {
    let incidents: i64 = env_or("ARCHIVE_QUERY_BENCH_INCIDENTS", 10_000_000);
    let runs: usize = env_or("ARCHIVE_QUERY_BENCH_RUNS", 200);
    let report_runs: usize = env_or("ARCHIVE_QUERY_BENCH_REPORT_RUNS", 200);
    // The baseline reports read every incident of the period: fewer runs (their p99 is then
    // near the max).
    let baseline_runs: usize = env_or("ARCHIVE_QUERY_BENCH_BASELINE_RUNS", 5);
    let url = generated_database(incidents).await;
    // The API's own read connection (and its session settings).
    let db = queries::Db::new(url.clone()).client().await.unwrap();
    let areas = queries::load_areas(&db).await.unwrap();
    let all = Caller::unrestricted();
    let county = all.grids_for("county-3", &areas).unwrap();
    let town = all.grids_for("town-47", &areas).unwrap();
    let community = all.grids_for("community-555", &areas).unwrap();
    if let GridFilter::Only(g) = &county {
        println!("county-3: {} grids", g.len());
    }
    let month = Period {
        from: END_MS - 30 * DAY_MS,
        to: END_MS,
    };
    let year = Period {
        from: END_MS - 365 * DAY_MS,
        to: END_MS,
    };
    let history = |period: Period, kind: Option<&str>| HistoryQuery {
        period,
        area: String::new(),
        source: None,
        kind: kind.map(str::to_owned),
        state: None,
        resolution: None,
        outcome: None,
        page_size: 100,
        after: None,
    };
    let report = |period: Period, bucket: Bucket| ReportQuery {
        period,
        area: String::new(),
        bucket,
    };
    // A cursor deep in the county's year: where page 50 starts.
    let deep = {
        let mut q = history(year, None);
        for _ in 0..49 {
            let (_, next) = queries::list_incidents(&db, &q, &county).await.unwrap();
            q.after = next;
        }
        q
    };
    let mut cases: Vec<Case> = Vec::new();
    let mut list_case = |name: &'static str, q: HistoryQuery, grids: GridFilter| {
        let db = db.clone();
        let statements = vec![queries::list_statement(&q, &grids)];
        cases.push(Case {
            name,
            runs,
            statements,
            run: Box::new(move || {
                let (db, q, grids) = (db.clone(), q.clone(), grids.clone());
                Box::pin(async move {
                    queries::list_incidents(&db, &q, &grids)
                        .await
                        .unwrap()
                        .0
                        .len()
                })
            }),
        });
    };
    list_case(
        "ListIncidents county, last 30 days, page 1",
        history(month, None),
        county.clone(),
    );
    list_case("ListIncidents county, year, page 50", deep, county.clone());
    list_case(
        "ListIncidents community, year, urgent presses",
        history(year, Some("button:urgent")),
        community.clone(),
    );
    list_case(
        "ListIncidents whole city, last 30 days, page 1",
        history(month, None),
        GridFilter::All,
    );
    // Each report twice: as the API answers it (rollup for whole days), and computed from the
    // incidents alone (the way before the rollup, exact percentiles) as the baseline.
    let mut report_case = |name: &'static str, q: ReportQuery, grids: GridFilter| {
        let db_rollup = db.clone();
        let (q1, grids1, areas1) = (q.clone(), grids.clone(), areas.clone());
        let plan = queries::report_plan(q.period, &grids, &areas);
        cases.push(Case {
            name,
            runs: report_runs,
            statements: queries::plan_statements(&plan)
                .into_iter()
                .map(|(_, s)| s)
                .collect(),
            run: Box::new(move || {
                let (db, q, grids, areas) = (
                    db_rollup.clone(),
                    q1.clone(),
                    grids1.clone(),
                    areas1.clone(),
                );
                Box::pin(async move {
                    queries::report(&db, &q, &grids, &areas)
                        .await
                        .unwrap()
                        .series
                        .len()
                })
            }),
        });
        let db_detail = db.clone();
        cases.push(Case {
            name: Box::leak(
                format!("{name} — baseline: from the incidents alone").into_boxed_str(),
            ),
            runs: baseline_runs,
            statements: queries::report_statements(&q, &grids).into(),
            run: Box::new(move || {
                let (db, q, grids) = (db_detail.clone(), q.clone(), grids.clone());
                Box::pin(async move {
                    queries::detail_report(&db, &q, &grids)
                        .await
                        .unwrap()
                        .series
                        .len()
                })
            }),
        });
    };
    report_case(
        "Report county, 30 days, daily",
        report(month, Bucket::Day),
        county.clone(),
    );
    report_case(
        "Report county, 30 days and a half, daily (partial first day from the incidents)",
        report(
            Period {
                from: month.from - DAY_MS / 2,
                to: month.to,
            },
            Bucket::Day,
        ),
        county.clone(),
    );
    report_case(
        "Report town, year, monthly",
        report(year, Bucket::Month),
        town,
    );
    report_case(
        "Report whole city, 30 days, weekly",
        report(month, Bucket::Week),
        GridFilter::All,
    );

    let mut plans = String::new();
    let mut table = String::from(
        "| query | rows | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |\n",
    );
    for case in &cases {
        let mut rows = 0;
        for _ in 0..3 {
            rows = (case.run)().await;
        }
        let mut took = Vec::with_capacity(case.runs);
        for _ in 0..case.runs {
            let started = Instant::now();
            let n = (case.run)().await;
            took.push(started.elapsed());
            assert_eq!(n, rows, "{}: the same answer every run", case.name);
        }
        took.sort();
        let line = format!(
            "| {} | {rows} | {} | {} | {} | {} |",
            case.name,
            case.runs,
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.99)),
            ms(*took.last().unwrap())
        );
        println!("{line}");
        writeln!(table, "{line}").unwrap();
        writeln!(plans, "## {}\n", case.name).unwrap();
        for statement in &case.statements {
            let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {}", statement.sql);
            let lines = db.query(&explain, &statement.args()).await.unwrap();
            // The SQL without the long grid list: it is the same text the query sends.
            writeln!(plans, "```\n{}\n", statement.sql).unwrap();
            for line in lines {
                writeln!(plans, "{}", line.get::<_, String>(0)).unwrap();
            }
            writeln!(plans, "```\n").unwrap();
        }
    }
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let path = artifacts.join("archive-query-plans.txt");
    std::fs::write(&path, format!("{table}\n{plans}")).unwrap();
    println!("{incidents} incidents; plans in {}", path.display());
}
