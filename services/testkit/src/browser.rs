//! A real headless Chromium, driven over the W3C WebDriver protocol through Debian's
//! chromedriver. The protocol is JSON over plain HTTP, so a few lines over a TCP socket do
//! instead of a WebDriver client crate and its dependency tree.

use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags Chromium needs in a container without a display, GPU or network of its own.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// chromedriver and one browser session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn missing(what: &str) -> String {
    format!(
        "{what} not found: browser tests need Debian's chromium and chromium-driver \
         (apt-get install -y chromium chromium-driver; .ci/run installs them)"
    )
}

/// How long the browser waits for a page condition or chromedriver before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

impl Browser {
    /// A browser whose page is 1920×1080 (the wall console).
    pub async fn start() -> Self {
        Self::with_viewport(1920, 1080).await
    }

    /// A browser whose page is `width`×`height` CSS pixels (e.g. 390×844 for a phone).
    pub async fn with_viewport(width: i64, height: i64) -> Self {
        let port = free_port();
        // Its own process group, so the browsers it starts end with it.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", missing("chromedriver")));
        let profile =
            std::env::temp_dir().join(format!("helpgrid-chromium-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&profile).expect("a Chromium profile folder");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("{}", missing("chromium")));
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            _profile: TempDir(profile),
        };
        // chromedriver takes a moment to listen.
        within("chromedriver to start", async {
            while browser.request("GET", "/status", None).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": binary, "args": args },
            }}
        });
        let created = browser
            .request("POST", "/session", Some(capabilities))
            .await
            .expect("chromedriver creates a session");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser.fit_viewport(width, height).await;
        browser
    }

    /// Sizes the window so the page itself gets `width`×`height`.
    async fn fit_viewport(&self, width: i64, height: i64) {
        let rect = |w: i64, h: i64| json!({ "width": w, "height": h });
        self.command("window/rect", rect(width, height)).await;
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight];")
            .await;
        let (w, h) = (
            inner[0].as_i64().unwrap_or(width),
            inner[1].as_i64().unwrap_or(height),
        );
        if (w, h) != (width, height) {
            self.command("window/rect", rect(2 * width - w, 2 * height - h))
                .await;
        }
    }

    pub async fn open(&self, url: &str) {
        self.command("url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.command("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `script` until `done` holds for its result; returns that result.
    pub async fn wait_for(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        within(what, async {
            loop {
                let value = self.eval(script).await;
                if done(&value) {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// Ends the session (the browser closes); chromedriver ends on drop.
    pub async fn quit(self) {
        let path = format!("/session/{}", self.session);
        let _ = self.request("DELETE", &path, None).await;
    }

    /// The page as PNG bytes (for docs/ screenshots).
    pub async fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine;
        let encoded = self
            .request(
                "GET",
                &format!("/session/{}/screenshot", self.session),
                None,
            )
            .await
            .expect("chromedriver answers a screenshot");
        let encoded = encoded["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot: {encoded}"));
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("the screenshot is base64")
    }

    async fn command(&self, name: &str, body: Value) -> Value {
        let path = format!("/session/{}/{name}", self.session);
        let answer = self
            .request("POST", &path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("WebDriver {name}: {e}"));
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {name} failed: {answer}");
        }
        answer["value"].clone()
    }

    /// One HTTP/1.1 exchange with chromedriver (a fresh connection each time).
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> std::io::Result<Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        // chromedriver may keep the connection open: read the headers, then the body by its
        // length (or its chunks).
        let mut raw = Vec::new();
        let mut buffer = [0u8; 8192];
        let payload = loop {
            let read = stream.read(&mut buffer).await?;
            raw.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((headers, body)) = text.split_once("\r\n\r\n") {
                let headers = headers.to_ascii_lowercase();
                let length = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match length {
                    Some(length) if body.len() >= length => break body[..length].to_owned(),
                    None if headers.contains("chunked") && body.contains("\r\n0\r\n") => {
                        break dechunk(body);
                    }
                    _ if read == 0 => break body.to_owned(),
                    _ => {}
                }
            } else if read == 0 {
                return Err(std::io::Error::other(
                    "connection closed before the headers",
                ));
            }
        };
        serde_json::from_str(&payload).map_err(std::io::Error::other)
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the browser it started share a process group: end the group.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// A free loopback port (bind to port 0 and read what the kernel chose).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
