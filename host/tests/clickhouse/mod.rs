//! A real ClickHouse server for tests (Debian's `clickhouse-server` 18.16, installed by
//! `.ci/run`): its own config in a temporary directory, HTTP on a free loopback port, run as
//! the unprivileged `clickhouse` user when the tests run as root. Users: `default` (no
//! password) and `biller` (password `s3cret`). Killed (SIGKILL: a crash) when dropped; every
//! wait bounded.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `id -u NAME` / `id -g NAME`.
fn id(flag: &str, name: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Debian's server binary.
fn server() -> PathBuf {
    ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("ClickHouse is not installed: `apt-get install clickhouse-server` (Debian; `.ci/run` installs it)")
        })
}

/// A running (or stopped) server.
pub struct ClickHouse {
    dir: tempfile::TempDir,
    pub port: u16,
    tcp_port: u16,
    interserver_port: u16,
    child: Mutex<Option<Child>>,
    http: reqwest::Client,
}

fn config(dir: &Path, http: u16, tcp: u16, interserver: u16, timezone: &str) -> String {
    let d = dir.display();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><console>0</console></logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{interserver}</interserver_http_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>{timezone}</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
"#
    )
}

const USERS: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
        <biller><password>s3cret</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></biller>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;

impl ClickHouse {
    /// A server whose time zone is UTC.
    pub fn start() -> ClickHouse {
        ClickHouse::start_in_zone("UTC")
    }

    /// A server in `timezone` (what `DateTime` columns without a zone are written in).
    pub fn start_in_zone(timezone: &str) -> ClickHouse {
        let _ = server();
        let dir = tempfile::Builder::new()
            .prefix("edgemeter-ch")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let (port, tcp_port, interserver_port) = (free_port(), free_port(), free_port());
        std::fs::write(
            dir.path().join("config.xml"),
            config(dir.path(), port, tcp_port, interserver_port, timezone),
        )
        .expect("config");
        std::fs::write(dir.path().join("users.xml"), USERS).expect("users");
        for sub in ["data", "tmp", "user_files"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dirs");
        }
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "clickhouse:clickhouse"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the directory to clickhouse");
        }
        let ch = ClickHouse {
            dir,
            port,
            tcp_port,
            interserver_port,
            child: Mutex::new(None),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        };
        ch.up();
        ch
    }

    /// The URL of user `biller` on database `default`.
    pub fn url(&self) -> String {
        format!("http://biller:s3cret@127.0.0.1:{}/default", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Starts the (stopped) server and waits until it answers `/ping`.
    pub fn up(&self) {
        let mut cmd = Command::new(server());
        cmd.arg(format!(
            "--config-file={}",
            self.dir.path().join("config.xml").display()
        ))
        .current_dir(self.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if is_root() {
            let uid = id("-u", "clickhouse").expect("the clickhouse user (made by the package)");
            let gid = id("-g", "clickhouse").expect("the clickhouse group");
            cmd.gid(gid).uid(uid);
        }
        let child = cmd.spawn().expect("start clickhouse-server");
        *self.child.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").ok()?;
                    let mut out = String::new();
                    s.read_to_string(&mut out).ok()?;
                    Some(out.ends_with("Ok.\n"))
                })
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(status) = self
                .child
                .lock()
                .expect("lock")
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "clickhouse-server exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("server.err.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "ClickHouse did not answer /ping");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL: a crash) and waits for it to exit.
    pub fn down(&self) {
        if let Some(mut c) = self.child.lock().expect("lock").take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a statement as `default` (POST body); the answer's text, or the server's error.
    pub async fn try_exec(&self, sql: &str) -> Result<String, String> {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/", self.port))
            .body(sql.to_owned())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if ok { Ok(text) } else { Err(text) }
    }

    /// [`ClickHouse::try_exec`], panicking on an error.
    pub async fn exec(&self, sql: &str) -> String {
        self.try_exec(sql)
            .await
            .unwrap_or_else(|e| panic!("ClickHouse refused {sql}: {e}"))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.down();
    }
}
