//! The logs of the services a test runs in its own process (router, status service, and
//! librdkafka under them), one file per run, so a failed run can say what the services did.
//!
//! [`RunLog::start`] installs (once per process) a tracing subscriber that writes to the
//! current run's file, with librdkafka's own lines (rdkafka logs through the `log` crate);
//! each [`RunLog::next`] switches to a fresh file. `HELPGRID_TEST_LOG` filters (tracing's
//! `EnvFilter` syntax). The default leaves out each command the status service applies and
//! rdkafka's "global error" echo of librdkafka's lines (end of partition, mostly).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

type Sink = Arc<Mutex<Option<File>>>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Writes each formatted event to the run's current file (none: dropped).
struct SinkWriter(Sink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

fn sink() -> &'static Sink {
    SINK.get_or_init(|| {
        let sink: Sink = Arc::new(Mutex::new(None));
        let filter = tracing_subscriber::EnvFilter::try_from_env("HELPGRID_TEST_LOG")
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,helpgrid_status::commands=warn,rdkafka::client=off",
                )
            });
        let writer = Arc::clone(&sink);
        // A test binary that already installed a subscriber keeps it (and this sink stays
        // empty): the failure message then says so.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(move || SinkWriter(Arc::clone(&writer)))
            .try_init();
        sink
    })
}

/// The log folder of this test process and the file of the current run.
pub struct RunLog {
    dir: PathBuf,
    current: PathBuf,
}

impl RunLog {
    /// A fresh folder under the system's temp folder, and its first file `<name>.log`.
    pub fn start(test: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("helpgrid-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("log folder");
        let mut log = Self {
            current: dir.join("none"),
            dir,
        };
        log.next(name);
        log
    }

    /// Closes the current file and sends the logs to `<name>.log` from now on.
    pub fn next(&mut self, name: &str) -> &Path {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.current = self.dir.join(format!("{slug}.log"));
        let file = File::create(&self.current).expect("log file");
        *sink().lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        &self.current
    }

    pub fn path(&self) -> &Path {
        &self.current
    }

    /// For a failure message: the file's path, every WARN and ERROR line (at most `max`,
    /// the last ones) and the last `max` lines.
    pub fn excerpt(&self, max: usize) -> String {
        if let Some(file) = sink().lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = file.flush();
        }
        let lines: Vec<String> = match File::open(&self.current) {
            Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
            Err(e) => return format!("(no log at {}: {e})", self.current.display()),
        };
        let warnings: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        format!(
            "---- log {} ({} lines)\n---- {} warnings and errors (last {max}):\n{}\n---- last {max} lines:\n{}",
            self.current.display(),
            lines.len(),
            warnings.len(),
            warnings[warnings.len().saturating_sub(max)..]
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            lines[lines.len().saturating_sub(max)..].join("\n"),
        )
    }

    /// Removes the folder (after a run that passed).
    pub fn remove(self) {
        *sink().lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
