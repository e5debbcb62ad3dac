//! CPU and memory of the processes under test, from /proc (Linux), and the consumer lag of
//! the group under test, sampled once a second.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

/// Clock ticks per second for /proc/<pid>/stat times. 100 on every Linux this runs on
/// (USER_HZ); reading sysconf would need libc.
const TICKS_PER_S: f64 = 100.0;

/// Total CPU time (user + system) of a process in seconds, and its resident and peak
/// resident memory in MiB. None once the process is gone.
pub fn read(pid: u32) -> Option<(f64, f64, f64)> {
    let fields = stat_fields(pid)?;
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((
        (utime + stime) / TICKS_PER_S,
        kib("VmRSS:") / 1024.0,
        kib("VmHWM:") / 1024.0,
    ))
}

/// CPU seconds of a process and of every descendant alive now, each with the time of its
/// own children already reaped (so a backend that exits keeps counting, through its parent),
/// and their proportional memory (Pss: shared pages split among the sharers, so a server's
/// shared buffers count once) in MiB. For servers that fork a process per connection
/// (PostgreSQL). None once the root is gone.
pub fn read_tree(root: u32) -> Option<(f64, f64)> {
    // Every process's stat, read once: its parent (field 4 of stat(5), 1 after ")") links
    // the tree, and its times are summed below.
    let mut stats: std::collections::HashMap<u32, Vec<String>> = Default::default();
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(pid) {
            if let Some(ppid) = fields.get(1).and_then(|p| p.parse::<u32>().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
            stats.insert(pid, fields);
        }
    }
    stats.get(&root)?;
    let mut cpu = 0.0;
    let mut pss_kib = 0.0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if let Some(f) = stats.get(&pid) {
            // utime, stime, cutime, cstime: fields 14–17 of stat(5), 11–14 after ")".
            cpu += (11..=14)
                .filter_map(|i| f.get(i)?.parse::<f64>().ok())
                .sum::<f64>();
            pss_kib += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|r| {
                    r.lines()
                        .find_map(|l| l.strip_prefix("Pss:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                })
                .unwrap_or(0.0);
        }
        todo.extend(children.remove(&pid).unwrap_or_default());
    }
    Some((cpu / TICKS_PER_S, pss_kib / 1024.0))
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces, so they
/// are counted after its closing parenthesis).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// A watched process.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// Count its descendants too ([`read_tree`]).
    pub tree: bool,
}

impl Watched {
    pub fn process(name: impl Into<String>, pid: u32) -> Self {
        Self {
            name: name.into(),
            pid,
            tree: false,
        }
    }

    fn read(&self) -> Option<(f64, f64, f64)> {
        if self.tree {
            read_tree(self.pid).map(|(cpu, pss)| (cpu, pss, pss))
        } else {
            read(self.pid)
        }
    }
}

/// One sample: seconds since the run began, per process (CPU % of one core, RSS MiB), and
/// the group's lag in records (None when it could not be read).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_s: f64,
    pub processes: Vec<(String, f64, f64)>,
    pub lag: Option<i64>,
}

/// Per process: average and peak CPU %, peak RSS.
#[derive(Debug, Clone)]
pub struct Usage {
    pub name: String,
    pub cpu_avg_pct: f64,
    pub cpu_max_pct: f64,
    pub rss_max_mib: f64,
    pub cpu_seconds: f64,
}

pub struct Sampler {
    watched: Vec<Watched>,
    last: Vec<Option<(f64, std::time::Instant)>>,
    first: Vec<Option<f64>>,
    peak_rss: Vec<f64>,
    lag: Option<(BaseConsumer, String)>,
}

impl Sampler {
    /// `lag`: a consumer configured with the group id under test (it never joins the
    /// group, it only reads its committed offsets) and the input topic.
    pub fn new(watched: Vec<Watched>, lag: Option<(BaseConsumer, String)>) -> Self {
        let n = watched.len();
        Self {
            watched,
            last: vec![None; n],
            first: vec![None; n],
            peak_rss: vec![0.0; n],
            lag,
        }
    }

    pub fn sample(&mut self, at_s: f64) -> Sample {
        let now = std::time::Instant::now();
        let mut processes = Vec::new();
        for (i, w) in self.watched.iter().enumerate() {
            let Some((cpu_s, rss, hwm)) = w.read() else {
                continue;
            };
            self.first[i].get_or_insert(cpu_s);
            self.peak_rss[i] = self.peak_rss[i].max(hwm).max(rss);
            let pct = match self.last[i] {
                Some((prev, then)) => {
                    let dt = now.duration_since(then).as_secs_f64();
                    if dt > 0.0 {
                        100.0 * (cpu_s - prev) / dt
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            self.last[i] = Some((cpu_s, now));
            processes.push((w.name.clone(), pct, rss));
        }
        Sample {
            at_s,
            processes,
            lag: self.lag(),
        }
    }

    fn lag(&self) -> Option<i64> {
        let (consumer, topic) = self.lag.as_ref()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(2))
            .ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics().first()?.partitions() {
            tpl.add_partition(topic, p.id());
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(2))
            .ok()?;
        let mut lag = 0;
        for e in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(topic, e.partition(), Duration::from_secs(2))
                .ok()?;
            let position = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag += (high - position).max(0);
        }
        Some(lag)
    }

    /// Usage over the whole run, from samples taken by this sampler.
    pub fn usage(&self, samples: &[Sample], elapsed_s: f64) -> Vec<Usage> {
        self.watched
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let pcts: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| s.processes.iter().find(|p| p.0 == w.name))
                    .map(|p| p.1)
                    .collect();
                let cpu_seconds = match (self.first[i], self.last[i]) {
                    (Some(first), Some((last, _))) => last - first,
                    _ => 0.0,
                };
                Usage {
                    name: w.name.clone(),
                    cpu_avg_pct: if elapsed_s > 0.0 {
                        100.0 * cpu_seconds / elapsed_s
                    } else {
                        0.0
                    },
                    cpu_max_pct: pcts.iter().copied().fold(0.0, f64::max),
                    rss_max_mib: self.peak_rss[i],
                    cpu_seconds,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let (cpu, rss, hwm) = super::read(std::process::id()).expect("own /proc entry");
        assert!(cpu >= 0.0);
        assert!(rss > 0.0 && hwm >= rss);
    }

    #[test]
    fn a_tree_counts_a_busy_child() {
        // A child that spins for ~0.3 s of CPU: the tree rooted here must count it, this
        // process alone must not (its children are not reaped yet).
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .expect("sh");
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let (own, tree) = loop {
            let own = super::read(me).expect("own").0;
            let (tree, pss) = super::read_tree(me).expect("own tree");
            assert!(pss > 0.0);
            if tree - own >= 0.1 || std::time::Instant::now() > deadline {
                break (own, tree);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        child.kill().ok();
        child.wait().ok();
        assert!(tree - own >= 0.1, "tree {tree} s, own {own} s");
    }
}
