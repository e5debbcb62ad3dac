//! The real `helpgrid-token` binary: a key set made with `new-key --kid`, tokens minted with
//! either key and verified by a verifier that reads the same file, and `revoke` against the
//! real broker (HELPGRID_TEST_KAFKA) followed by a verifier's revocation follower.

use helpgrid_auth::follower::follow_revocations;
use helpgrid_auth::{TokenError, TokenKey};
use helpgrid_common::kafka::KafkaArgs;
use helpgrid_common::topics::{Topics, ensure_topics};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_helpgrid-token"))
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("helpgrid-token runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("helpgrid-token-{name}-{}", uuid()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn uuid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

fn mint(key_file: &Path, subject: &str, kid: Option<&str>) -> String {
    let mut command = tool();
    command.args(["mint", "--key-file"]).arg(key_file).args([
        "--subject",
        subject,
        "--role",
        "responder",
        "--grid",
        "g1",
    ]);
    if let Some(kid) = kid {
        command.args(["--kid", kid]);
    }
    run(&mut command)
}

#[test]
fn a_key_set_made_by_the_tool_signs_with_its_first_key_and_verifies_both() {
    let dir = temp_dir("keys");
    let (old, new) = (dir.join("old.line"), dir.join("new.line"));
    run(tool()
        .args(["new-key", "--kid", "2026-06", "--out"])
        .arg(&old));
    run(tool()
        .args(["new-key", "--kid", "2026-12", "--out"])
        .arg(&new));
    let line = |p: &Path| std::fs::read_to_string(p).expect("key line");
    assert!(line(&new).starts_with("2026-12=") && line(&new).len() == 8 + 64 + 1);
    let key_file = dir.join("auth.key");
    std::fs::write(&key_file, line(&old) + &line(&new)).expect("key file");

    let old_token = mint(&key_file, "w-1", None);
    let new_token = mint(&key_file, "w-1", Some("2026-12"));
    let verifier = TokenKey::from_file(&key_file).expect("key set");
    assert!(verifier.verify(&old_token).is_ok());
    assert!(verifier.verify(&new_token).is_ok());
    // The old key retired: the verifier re-reads its file and refuses the old token.
    std::fs::write(&key_file, line(&new)).expect("key file");
    assert_eq!(verifier.reload().ok(), Some(true));
    assert_eq!(verifier.verify(&old_token), Err(TokenError::Foreign));
    assert!(verifier.verify(&new_token).is_ok());

    let refused = tool()
        .args(["new-key", "--kid", "no spaces", "--out"])
        .arg(dir.join("bad.line"))
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_the_command_line_reaches_a_running_verifier() {
    let Ok(brokers) = std::env::var("HELPGRID_TEST_KAFKA") else {
        panic!("HELPGRID_TEST_KAFKA must name the test broker (scripts/test sets it)");
    };
    let prefix = format!("auth-test-{}.", uuid());
    let mut args = KafkaArgs::new(brokers.clone(), prefix.clone());
    args.topic_partitions = 1;
    ensure_topics(&args, &Topics::with_prefix(&prefix))
        .await
        .expect("topics");
    let dir = temp_dir("revoke");
    let key_file = dir.join("auth.key");
    run(tool()
        .args(["new-key", "--kid", "k1", "--out"])
        .arg(&key_file));
    let key = Arc::new(TokenKey::from_file(&key_file).expect("key"));
    let stop = CancellationToken::new();
    let mut following = follow_revocations(&args, "auth-test", Arc::clone(&key), stop.clone())
        .await
        .expect("follow");
    tokio::time::timeout(Duration::from_secs(30), following.wait_caught_up())
        .await
        .expect("caught up");
    // Issued a second before the revocation, so "before now" covers it whatever the clock.
    let lost_phone = mint(&key_file, "w-42", None);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(key.verify(&lost_phone).is_ok());

    run(tool()
        .args(["revoke", "--subject", "w-42", "--reason", "lost phone"])
        .args(["--kafka-brokers", &brokers, "--topic-prefix", &prefix]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while key.verify(&lost_phone) != Err(TokenError::Revoked) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not revoked within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(key.verify(&mint(&key_file, "w-42", None)).is_ok());
    assert!(key.verify(&mint(&key_file, "w-43", None)).is_ok());
    stop.cancel();
    std::fs::remove_dir_all(&dir).expect("clean up");
}
