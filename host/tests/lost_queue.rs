//! Issue 8, scenario 3: a lost or replaced queue is not silent. On the real binary (the debug
//! build) against `kube-sim`:
//!
//! - a queue whose database is corrupt is moved aside *inside* its directory (which may be a
//!   volume's mount point) and the start is refused with an ERROR naming what was lost and
//!   the fix — again at every start, until `--allow-empty-queue` (or a backfill) says how to
//!   proceed;
//! - with leader election, a replica whose queue is empty while the Lease names it as holder
//!   (its volume was replaced) is refused the same way, while a replica that never ran (a
//!   standby of a first install) starts without flags;
//! - a first start in a new directory needs no flag.
//!
//! Real time: every wait is bounded; no assertion is on a duration.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube_sim::{Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodTemplate, SimConfig};

const LIMIT: Duration = Duration::from_secs(60);

struct Sim {
    sim: KubeSim,
    kubeconfig: tempfile::NamedTempFile,
}

async fn sim() -> Sim {
    let cluster = Cluster::new();
    cluster
        .create_node(&NodeTemplate::new("node-0").capacity("cpu", "8"))
        .expect("node");
    cluster
        .create_running_pod(
            &PodTemplate::new("team-a", "web")
                .container(ContainerTemplate::new("app").cpu("250m", None)),
            "node-0",
        )
        .expect("pod");
    let sim = KubeSim::start(cluster, SimConfig::default())
        .await
        .expect("kube-sim starts");
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml()).expect("write kubeconfig");
    Sim { sim, kubeconfig }
}

/// `edgemeter run --sink stdout` as a child, its stderr collected.
struct Process {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    fn run(sim: &Sim, queue: &Path, extra: &[&str]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(sim.kubeconfig.path())
            .args(["--sink", "stdout", "--queue-dir"])
            .arg(queue)
            .args(["--http-listen", "127.0.0.1:0", "--scrape-interval", "2s"])
            .args(extra);
        for var in [
            "EDGEMETER_CONFIG",
            "EDGEMETER_BACKFILL",
            "EDGEMETER_ALLOW_EMPTY_QUEUE",
            "EDGEMETER_LEADER_ELECTION",
            "KUBECONFIG",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .env("EDGEMETER_LOG", "info")
            .env(
                "EDGEMETER_CACHE_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache"),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgemeter");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr");
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Process {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Waits until stderr has a line with `needle`, or the child exits (bounded).
    async fn wait_for(&mut self, needle: &str) -> bool {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return self.log().contains(needle);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits for the exit (SIGKILL after [`LIMIT`]) and for stderr to close.
    async fn exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + LIMIT;
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }

    /// SIGTERM and wait.
    async fn stop(&mut self) -> Option<ExitStatus> {
        self.signal("-TERM");
        self.exit().await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Damages sled's persisted configuration, which sled reports as corruption on open.
fn corrupt(queue: &Path) {
    let conf = queue.join("conf");
    assert!(
        conf.exists(),
        "sled has no conf file in {}",
        queue.display()
    );
    std::fs::write(&conf, "segment_size 524288\nthis line is damaged\n").expect("damage conf");
}

fn moved_aside(queue: &Path) -> Vec<String> {
    std::fs::read_dir(queue)
        .expect("queue dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("corrupt-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_queue_is_moved_aside_and_refused_until_told_how_to_proceed() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = dir.path().join("queue");

    // A first start in a new directory needs no flag; it bills, then stops cleanly.
    let mut first = Process::run(&sim, &queue, &[]);
    assert!(
        first.wait_for("edgemeter running").await,
        "a first start needs no flag:\n{}",
        first.log()
    );
    let status = first.stop().await;
    assert!(status.is_some_and(|s| s.success()), "{}", first.log());
    assert!(queue.join("edgemeter-queue.json").exists(), "history file");

    corrupt(&queue);
    for attempt in 0..2 {
        let mut refused = Process::run(&sim, &queue, &[]);
        let status = refused.exit().await;
        let log = refused.log();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "attempt {attempt}: a lost queue must refuse the start:\n{log}"
        );
        assert!(
            log.contains("ERROR") && log.contains("lost its watermark"),
            "attempt {attempt}: an ERROR says what was lost:\n{log}"
        );
        assert!(
            log.contains("moved aside") && log.contains("billing had reached"),
            "attempt {attempt}: it names the move and the old watermark:\n{log}"
        );
        assert!(
            log.contains("EDGEMETER_ALLOW_EMPTY_QUEUE=true") && log.contains("EDGEMETER_BACKFILL="),
            "attempt {attempt}: it names the fix:\n{log}"
        );
        assert!(!log.contains("edgemeter running"), "{log}");
    }
    // Moved inside the directory (a mount point cannot be renamed), once.
    assert_eq!(moved_aside(&queue).len(), 1, "{:?}", moved_aside(&queue));
    assert!(queue.is_dir());

    let mut told = Process::run(&sim, &queue, &["--allow-empty-queue"]);
    assert!(
        told.wait_for("edgemeter running").await,
        "--allow-empty-queue proceeds:\n{}",
        told.log()
    );
    assert!(told.log().contains("starting as told"), "{}", told.log());
    let status = told.stop().await;
    assert!(status.is_some_and(|s| s.success()), "{}", told.log());

    // Started once: the queue has its watermark again, no flag is needed any more.
    let mut again = Process::run(&sim, &queue, &[]);
    assert!(
        again.wait_for("edgemeter running").await,
        "after a start that proceeded, the queue is whole again:\n{}",
        again.log()
    );
    assert!(
        !again.log().contains("lost its watermark"),
        "{}",
        again.log()
    );
    again.stop().await;
    drop(sim.sim);
}

const LEASE_ARGS: &[&str] = &[
    "--leader-election",
    "true",
    "--lease-namespace",
    "metering",
    "--lease-name",
    "edgemeter",
    "--lease-duration",
    "3s",
    "--lease-renew-deadline",
    "2s",
    "--lease-retry-period",
    "500ms",
];

fn with_identity(identity: &str) -> Vec<&str> {
    let mut args = LEASE_ARGS.to_vec();
    args.extend(["--lease-identity", identity]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_volume_was_replaced_is_refused_and_a_new_standby_is_not() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let holder_args = with_identity("edgemeter-0");

    // edgemeter-0 takes the lease and bills; its watermark reaches the Lease.
    let mut holder = Process::run(&sim, &dir.path().join("q0"), &holder_args);
    let deadline = Instant::now() + LIMIT;
    let in_lease = |sim: &KubeSim| {
        sim.lease("metering", "edgemeter")
            .and_then(|l| {
                l.pointer("/metadata/annotations/watermark.edgemeter.io~1kubernetes")
                    .cloned()
            })
            .is_some()
    };
    while !in_lease(&sim.sim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        in_lease(&sim.sim),
        "the holder's watermark is in the Lease:\n{}",
        holder.log()
    );

    // A second replica with a new, empty queue: a standby of a first install, no flag.
    let mut standby = Process::run(&sim, &dir.path().join("q1"), &with_identity("edgemeter-1"));
    assert!(
        standby.wait_for("edgemeter running").await,
        "a standby with an empty queue starts:\n{}",
        standby.log()
    );
    assert!(!standby.log().contains("lost its watermark"));
    standby.stop().await;

    // edgemeter-0 dies holding the Lease and comes back on a new, empty volume.
    holder.signal("-KILL");
    holder.exit().await;
    let mut replaced = Process::run(&sim, &dir.path().join("q0-new"), &holder_args);
    let status = replaced.exit().await;
    let log = replaced.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the Lease names this replica while its queue is empty:\n{log}"
    );
    assert!(
        log.contains("lost its watermark")
            && log.contains("the Lease names this replica (edgemeter-0)")
            && log.contains("billing had reached"),
        "{log}"
    );
    // A backfill is a way to proceed.
    let mut told = Process::run(
        &sim,
        &dir.path().join("q0-new"),
        &[holder_args.as_slice(), &["--backfill", "1m"]].concat(),
    );
    assert!(
        told.wait_for("edgemeter running").await,
        "a backfill proceeds:\n{}",
        told.log()
    );
    told.stop().await;
}
