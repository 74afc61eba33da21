//! `edgemeter probe URL [--timeout 5s]`: one HTTP GET; success is a 2xx answer.
//!
//! The image has no shell and no curl, so this is what the Helm `helm test` hook and exec
//! probes run (`/edgemeter probe http://127.0.0.1:9464/readyz`). It is meant for loopback and
//! pod-network addresses: proxy variables (`HTTP_PROXY`, …) are ignored and redirects are not
//! followed (a 3xx is reported, not chased). Anything but a 2xx is an error naming the status
//! and the first line of the body, or the connection failure; `main` prints it on stderr and
//! exits non-zero. On success one line, `URL: STATUS`, goes to stdout.

use std::time::Duration;

use crate::window::{self, WindowError};

/// At most this much of an error answer's body is read to find its first line.
const BODY_PREFIX_BYTES: usize = 4096;

/// GET a URL; exit 0 on 2xx, non-zero with the reason on stderr otherwise.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// URL to GET, e.g. http://127.0.0.1:9464/readyz.
    pub url: String,

    /// Give up after this long: connecting, sending and reading the answer (Go duration
    /// syntax, e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub timeout: String,
}

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid --timeout")]
    Timeout(#[source] WindowError),
    #[error("failed to probe: --timeout must be more than zero")]
    ZeroTimeout,
    #[error("failed to probe {url:?}: not a URL ({reason})")]
    Url { url: String, reason: String },
    #[error("failed to probe {url}: only http:// and https:// URLs are supported")]
    Scheme { url: String },
    #[error("failed to start the probe's async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("failed to build the probe's HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("failed to probe {url}: no answer within {timeout}")]
    TimedOut { url: String, timeout: String },
    #[error("failed to probe {url}: the request failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to probe {url}: it answered {status}{}", body_suffix(.body))]
    Status {
        url: String,
        status: reqwest::StatusCode,
        /// First line of the answer's body (empty when there is none).
        body: String,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// Runs the probe and prints `URL: STATUS` on stdout when it answers 2xx.
pub fn run(args: ProbeArgs) -> Result<(), ProbeError> {
    let timeout = window::parse_duration(&args.timeout).map_err(ProbeError::Timeout)?;
    if timeout.is_zero() {
        return Err(ProbeError::ZeroTimeout);
    }
    let url = parse_url(&args.url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProbeError::Runtime)?;
    let status = runtime.block_on(probe(url.clone(), timeout, &args.timeout))?;
    println!("{url}: {status}");
    Ok(())
}

fn parse_url(input: &str) -> Result<reqwest::Url, ProbeError> {
    let url = reqwest::Url::parse(input).map_err(|e| ProbeError::Url {
        url: input.to_owned(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        _ => Err(ProbeError::Scheme {
            url: input.to_owned(),
        }),
    }
}

/// One GET with `timeout` over the whole exchange; the status when it is 2xx.
async fn probe(
    url: reqwest::Url,
    timeout: Duration,
    timeout_text: &str,
) -> Result<reqwest::StatusCode, ProbeError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("edgemeter-probe/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ProbeError::Client)?;
    let failed = |source: reqwest::Error| {
        if source.is_timeout() {
            ProbeError::TimedOut {
                url: url.to_string(),
                timeout: timeout_text.to_owned(),
            }
        } else {
            ProbeError::Request {
                url: url.to_string(),
                source,
            }
        }
    };
    let mut response = client.get(url.clone()).send().await.map_err(failed)?;
    let status = response.status();
    if status.is_success() {
        return Ok(status);
    }
    // The reason is usually on the body's first line (`/readyz` says why it is not ready).
    let mut prefix = Vec::new();
    while prefix.len() < BODY_PREFIX_BYTES && !prefix.contains(&b'\n') {
        match response.chunk().await {
            Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
            // A body cut short or too slow still leaves the status to report.
            Ok(None) | Err(_) => break,
        }
    }
    Err(ProbeError::Status {
        url: url.to_string(),
        status,
        body: first_line(&prefix),
    })
}

/// The first line of `bytes`, lossily decoded, trimmed and cut to a readable length.
fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_PREFIX_BYTES)]);
    let line = text.lines().next().unwrap_or("").trim();
    const MAX_CHARS: usize = 200;
    if line.chars().count() > MAX_CHARS {
        let cut: String = line.chars().take(MAX_CHARS).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_is_trimmed_and_bounded() {
        assert_eq!(first_line(b"not ready: paused\nmore"), "not ready: paused");
        assert_eq!(first_line(b"  \r\n"), "");
        assert_eq!(first_line(b""), "");
        let long = "x".repeat(300);
        assert_eq!(first_line(long.as_bytes()).chars().count(), 201);
    }

    #[test]
    fn only_http_urls_are_probed() {
        assert!(parse_url("http://127.0.0.1:9464/readyz").is_ok());
        assert!(matches!(
            parse_url("file:///etc/passwd"),
            Err(ProbeError::Scheme { .. })
        ));
        assert!(matches!(
            parse_url("127.0.0.1:9464"),
            Err(ProbeError::Url { .. }) | Err(ProbeError::Scheme { .. })
        ));
    }
}
