//! `edgemeter probe` as a health check runs it: the real binary against a real loopback HTTP
//! server (std `TcpListener`, one canned answer per connection), exit codes and stderr.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Serves `answer` (a whole HTTP/1.1 response) to every connection, after reading the request
/// head. With `None` it accepts and then says nothing, for the timeout case.
fn serve(answer: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    // Hold the connection open past the probe's timeout.
                    None => std::thread::sleep(Duration::from_secs(5)),
                }
            });
        }
    });
    addr
}

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .arg("probe")
        .args(args)
        .env_remove("EDGEMETER_CONFIG")
        .output()
        .expect("edgemeter runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_2xx_answer_exits_zero() {
    let addr = serve(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n",
    ));
    let url = format!("http://{addr}/readyz");
    let out = probe(&[&url]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{url}: 200 OK")
    );
}

#[test]
fn a_503_exits_non_zero_naming_status_and_body() {
    let addr = serve(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 32\r\nconnection: close\r\n\r\nnot ready: delivery paused\nmore\n",
    ));
    let out = probe(&[&format!("http://{addr}/readyz"), "--timeout", "2s"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("503 Service Unavailable"), "stderr: {err}");
    assert!(err.contains("not ready: delivery paused"), "stderr: {err}");
    assert!(!err.contains("more"), "only the first body line: {err}");
}

#[test]
fn a_redirect_is_reported_not_followed() {
    let addr = serve(Some(
        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ));
    let out = probe(&[&format!("http://{addr}/")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("302 Found"),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn a_refused_port_exits_non_zero_with_the_connection_error() {
    // Bind and drop: nothing listens on the port afterwards.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let out = probe(&[&format!("http://{addr}/readyz"), "--timeout", "2s"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("failed to probe http://{addr}/readyz")),
        "stderr: {err}"
    );
    assert!(
        err.to_lowercase().contains("connection refused"),
        "stderr: {err}"
    );
}

#[test]
fn a_silent_server_times_out() {
    let addr = serve(None);
    let started = Instant::now();
    let out = probe(&[&format!("http://{addr}/readyz"), "--timeout", "300ms"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no answer within 300ms"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_arguments_are_refused() {
    for (args, expect) in [
        (&["ftp://127.0.0.1/"][..], "only http:// and https://"),
        (&["not a url"][..], "not a URL"),
        (
            &["http://127.0.0.1:1/", "--timeout", "soon"][..],
            "invalid --timeout",
        ),
        (
            &["http://127.0.0.1:1/", "--timeout", "0s"][..],
            "more than zero",
        ),
    ] {
        let out = probe(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
}
