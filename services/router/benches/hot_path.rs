//! The router's hot pure path, per help event: decode + validate the record, let the desk
//! decide (dedup, open, match a responder), and encode what it writes. Kafka is left out on
//! purpose: `helpgrid-load` measures the whole pipeline; this shows what the code costs.
//!
//!     cargo bench -p helpgrid-router --bench hot_path
//!
//! The roster is a district (300 grids, 2 grid workers each, supervisors and patrol
//! officers per 3 grids), the desk already holds `OPEN` incidents, as under load.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use helpgrid_common::time::to_timestamp;
use helpgrid_proto::pb::{
    ButtonPress, Envelope, GeoPoint, HelpEvent, PressKind, Responder, ResponderRole, help_event,
};
use helpgrid_router::domain::validate::{self, ValidHelpEvent};
use helpgrid_router::domain::{Desk, Policy, Roster};
use prost::Message;
use std::hint::black_box;
use std::time::{Duration, Instant};

const NOW: i64 = 1_760_000_000_000;
const GRIDS: usize = 300;
const OPEN: usize = 5_000;

fn grid(g: usize) -> String {
    format!("grid-{g:04}")
}

fn at(g: usize) -> GeoPoint {
    GeoPoint {
        latitude: 32.684 + (g / 18) as f64 * 0.0045,
        longitude: 109.029 + (g % 18) as f64 * 0.0045,
    }
}

fn roster() -> Roster {
    let mut roster = Roster::default();
    let mut add = |id: String, role: ResponderRole, grids: Vec<String>, g: usize| {
        roster.upsert(Responder {
            responder_id: id,
            display_name: "吴建国".into(),
            role: role as i32,
            grid_ids: grids,
            on_duty: true,
            last_location: Some(at(g)),
            location_updated_at: None,
        });
    };
    for g in 0..GRIDS {
        for w in 0..2 {
            add(
                format!("{}-worker-{w}", grid(g)),
                ResponderRole::GridWorker,
                vec![grid(g)],
                g,
            );
        }
    }
    for b in 0..GRIDS / 3 {
        let grids: Vec<String> = (b * 3..b * 3 + 3).map(grid).collect();
        add(
            format!("supervisor-{b}"),
            ResponderRole::GridSupervisor,
            grids.clone(),
            b * 3,
        );
        for o in 0..2 {
            add(
                format!("officer-{b}-{o}"),
                ResponderRole::PatrolOfficer,
                grids.clone(),
                b * 3,
            );
        }
    }
    roster
}

/// The `n`th press of a run: household `n` (so every press opens an incident), one in
/// twelve urgent (two tracks).
fn press(n: usize, household: usize) -> Vec<u8> {
    let g = household % GRIDS;
    let hh = format!("{}-hh-{household:06}", grid(g));
    HelpEvent {
        envelope: Some(Envelope {
            event_id: format!("bench-{n:08}-5b8e1c1e-0f7a-4c55-9d8e"),
            occurred_at: Some(to_timestamp(NOW - 3)),
            source: format!("hub:{hh}"),
            schema_version: 1,
        }),
        body: Some(help_event::Body::ButtonPress(ButtonPress {
            device_id: format!("btn-{hh}"),
            household_id: hh,
            grid_id: grid(g),
            kind: if n.is_multiple_of(12) {
                PressKind::Urgent
            } else {
                PressKind::Help
            } as i32,
            location: Some(at(g)),
            battery_percent: 80,
        })),
    }
    .encode_to_vec()
}

fn decoded(bytes: &[u8]) -> ValidHelpEvent {
    validate::decode_help_event(Some(bytes), NOW).expect("bench events are valid")
}

/// A desk holding `OPEN` incidents, and the next press number to use.
fn busy_desk(roster: &Roster) -> (Desk, usize) {
    let mut desk = Desk::new(Policy::default());
    for n in 0..OPEN {
        let e = decoded(&press(n, n));
        let _ = desk.on_help_event((n % 6) as i32, &e, roster, NOW);
    }
    (desk, OPEN)
}

/// Runs `per_event` over `iters` fresh presses on a fresh busy desk; only the loop is timed.
fn timed(
    roster: &Roster,
    iters: u64,
    make: impl Fn(usize) -> Vec<u8>,
    mut per_event: impl FnMut(&mut Desk, &[u8]),
) -> Duration {
    let (mut desk, next) = busy_desk(roster);
    let events: Vec<Vec<u8>> = (0..iters as usize).map(|i| make(next + i)).collect();
    let started = Instant::now();
    for e in &events {
        per_event(&mut desk, e);
    }
    started.elapsed()
}

fn benches(c: &mut Criterion) {
    let roster = roster();
    let mut group = c.benchmark_group("help_event");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));

    let one = press(1, 1);
    group.bench_function("decode_validate", |b| {
        b.iter(|| validate::decode_help_event(Some(black_box(&one)), NOW))
    });
    group.bench_function("on_help_event_open_and_assign", |b| {
        b.iter_custom(|iters| {
            let events: Vec<ValidHelpEvent> = (0..iters as usize)
                .map(|i| decoded(&press(OPEN + i, OPEN + i)))
                .collect();
            let (mut desk, _) = busy_desk(&roster);
            let started = Instant::now();
            for (i, e) in events.iter().enumerate() {
                black_box(desk.on_help_event((i % 6) as i32, e, &roster, NOW));
            }
            started.elapsed()
        })
    });
    group.bench_function("on_help_event_repeat_press_attaches", |b| {
        // Presses from households that already have an open incident.
        b.iter_custom(|iters| {
            let events: Vec<ValidHelpEvent> = (0..iters as usize)
                .map(|i| decoded(&press(OPEN + i, i % OPEN)))
                .collect();
            let (mut desk, _) = busy_desk(&roster);
            let started = Instant::now();
            for (i, e) in events.iter().enumerate() {
                black_box(desk.on_help_event((i % 6) as i32, e, &roster, NOW));
            }
            started.elapsed()
        })
    });
    group.bench_function("record_to_records_out", |b| {
        // What the pipeline does per record besides Kafka: decode + validate, decide, and
        // encode each incident event it will produce.
        b.iter_custom(|iters| {
            timed(
                &roster,
                iters,
                |n| press(n, n),
                |desk, bytes| {
                    if let Ok(e) = validate::decode_help_event(Some(bytes), NOW) {
                        let (_, out) = desk.on_help_event(0, &e, &roster, NOW);
                        for o in &out {
                            black_box(o.event.encode_to_vec());
                        }
                    }
                },
            )
        })
    });
    group.bench_function("pipeline_per_press", |b| {
        // Everything the pipeline does per press besides Kafka: decode + validate, decide,
        // encode each incident event, and the changed incident's incident-state record (the
        // desk's stored snapshot, copied as the pipeline copies it).
        b.iter_custom(|iters| {
            timed(
                &roster,
                iters,
                |n| press(n, n),
                |desk, bytes| {
                    if let Ok(e) = validate::decode_help_event(Some(bytes), NOW) {
                        let (_, out) = desk.on_help_event(0, &e, &roster, NOW);
                        let mut payload = Vec::new();
                        for o in &out {
                            payload.clear();
                            let _ = o.event.encode(&mut payload);
                            black_box(&payload);
                        }
                        if let Some(last) = out.last().and_then(|o| o.event.incident.as_ref()) {
                            black_box(desk.snapshot(&last.incident_id).map(|(_, r)| r.to_vec()));
                        }
                    }
                },
            )
        })
    });
    group.bench_function("encode_incident_event", |b| {
        let (mut desk, _) = busy_desk(&roster);
        let e = decoded(&press(OPEN + 1, OPEN + 1));
        let (_, out) = desk.on_help_event(0, &e, &roster, NOW);
        b.iter_batched(
            || out[0].event.clone(),
            |event| black_box(event.encode_to_vec()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
