//! A real PostgreSQL server for tests and `benches/sql.rs` (Debian's `postgresql` 15, installed
//! by `.ci/run`): a fresh cluster in a temporary directory on a loopback port, run as the
//! unprivileged `postgres` user when the tests run as root (PostgreSQL refuses root). Stopped
//! (immediate shutdown) when dropped; every wait bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of Debian's PostgreSQL binaries.
fn bin_dir() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed: `apt-get install postgresql` (Debian; `.ci/run` installs it)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL binary, as `postgres` when this process is root.
fn run(binary: &str, args: &[String]) -> std::process::Output {
    let path = bin_dir().join(binary);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", path.display()))
}

/// A running server.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// Initialises and starts a cluster; `superuser` `edgemeter` (trust auth on loopback).
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("edgemeter-pg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        let out = run(
            "initdb",
            &[
                "-D".into(),
                data.display().to_string(),
                "-A".into(),
                "trust".into(),
                "-U".into(),
                "edgemeter".into(),
                "--no-sync".into(),
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let pg = Postgres {
            _dir: dir,
            data,
            port,
        };
        pg.up();
        pg
    }

    /// The connection URL.
    pub fn url(&self) -> String {
        format!(
            "postgres://edgemeter@127.0.0.1:{}/postgres?connect_timeout=5",
            self.port
        )
    }

    /// The cluster's data directory (its `postmaster.pid` names the server process).
    #[allow(
        dead_code,
        reason = "used by benches/sql.rs (its CPU figures), not by every test"
    )]
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn up(&self) {
        let out = run(
            "pg_ctl",
            &[
                "-D".into(),
                self.data.display().to_string(),
                "-l".into(),
                self.data.join("server.log").display().to_string(),
                "-o".into(),
                format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100 -c max_prepared_transactions=10",
                    self.port,
                    self.data.display()
                ),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "start".into(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once (`immediate`: like a crash; it recovers at the next start).
    pub fn down(&self) {
        let _ = run(
            "pg_ctl",
            &[
                "-D".into(),
                self.data.display().to_string(),
                "-m".into(),
                "immediate".into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "stop".into(),
            ],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.down();
    }
}

/// A connected client (its connection driven on the current runtime).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}
