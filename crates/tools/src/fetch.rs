//! `web_fetch`: an HTTP(S) GET that returns a page's main text as markdown, safe by default.
//!
//! Every hop (the first URL and each redirect, at most `max_redirects`) is checked against the
//! domain filter, its host resolved, and every resolved address checked (see `net`); the request
//! then goes to the address that was checked (no second lookup, so no DNS-rebinding window) and
//! through no proxy. Hosts on the explicit `allow_hosts` list (`host:port`, for tests and
//! intranets; empty by default) skip the address check only. Bodies stop at `max_bytes`, the whole
//! fetch at `timeout`, and only text, HTML and JSON are read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use url::{Host, Url};

use crate::filter::DomainFilter;
use crate::{html, net};

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_redirects: usize,
    /// `host:port` pairs reachable even when they resolve to internal addresses.
    pub allow_hosts: Vec<String>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_bytes: 2 * 1024 * 1024,
            timeout: Duration::from_secs(20),
            max_redirects: 5,
            allow_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub url: String,
    /// Where the redirects ended.
    pub final_url: String,
    pub title: Option<String>,
    pub content_type: String,
    /// The main text as markdown (HTML), or the body as it came (text, JSON).
    pub content: String,
    /// The body was longer than `max_bytes` and was cut there.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("excluded by the domain filter: {0}")]
    Filtered(String),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("unsupported content type {0:?} (text, HTML and JSON only)")]
    ContentType(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Network(String),
}

pub struct Fetcher {
    config: FetchConfig,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Self {
        Self { config }
    }

    pub async fn fetch(&self, url: &str, filter: &DomainFilter) -> Result<Page, FetchError> {
        let limit = self.config.timeout;
        tokio::time::timeout(limit, self.follow(url, filter))
            .await
            .unwrap_or(Err(FetchError::Timeout(limit)))
    }

    async fn follow(&self, start: &str, filter: &DomainFilter) -> Result<Page, FetchError> {
        let mut url =
            Url::parse(start).map_err(|e| FetchError::InvalidUrl(format!("{start}: {e}")))?;
        for _ in 0..=self.config.max_redirects {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FetchError::Refused(format!(
                    "scheme {} (http and https only)",
                    url.scheme()
                )));
            }
            if !filter.permits(&url) {
                return Err(FetchError::Filtered(url.to_string()));
            }
            let response = self.get(&url).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or(FetchError::Status(status.as_u16()))?;
                url = url
                    .join(location)
                    .map_err(|e| FetchError::InvalidUrl(format!("redirect to {location}: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            return self.read(start, url, response).await;
        }
        Err(FetchError::TooManyRedirects(self.config.max_redirects))
    }

    /// One request, to the address that passed the checks.
    async fn get(&self, url: &Url) -> Result<reqwest::Response, FetchError> {
        let addr = self.checked_address(url).await?;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.config.timeout)
            .user_agent(concat!(
                "Quorate/",
                env!("CARGO_PKG_VERSION"),
                " (web_fetch)"
            ));
        if let Some(Host::Domain(domain)) = url.host() {
            client = client.resolve(domain, addr);
        }
        let client = client
            .build()
            .map_err(|e| FetchError::Network(e.to_string()))?;
        client
            .get(url.clone())
            .header(
                "accept",
                "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8",
            )
            .send()
            .await
            .map_err(|e| self.transport(&e))
    }

    async fn checked_address(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::InvalidUrl(format!("{url}: no port")))?;
        let (name, addrs): (String, Vec<SocketAddr>) = match url.host() {
            Some(Host::Domain(domain)) => {
                let found = tokio::net::lookup_host((domain, port))
                    .await
                    .map_err(|e| FetchError::Network(format!("cannot resolve {domain}: {e}")))?;
                (domain.to_ascii_lowercase(), found.collect())
            }
            Some(Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(IpAddr::V4(ip), port)]),
            Some(Host::Ipv6(ip)) => (
                format!("[{ip}]"),
                vec![SocketAddr::new(IpAddr::V6(ip), port)],
            ),
            None => return Err(FetchError::InvalidUrl(format!("{url}: no host"))),
        };
        let first = *addrs
            .first()
            .ok_or_else(|| FetchError::Network(format!("{name} has no address")))?;
        if self.config.allow_hosts.contains(&format!("{name}:{port}")) {
            return Ok(first);
        }
        // Every address must be public: a name with one internal address is refused outright.
        for addr in &addrs {
            if let Some(why) = net::refusal(addr.ip()) {
                return Err(FetchError::Refused(format!(
                    "{name} resolves to {}, a {why} address",
                    addr.ip()
                )));
            }
        }
        Ok(first)
    }

    async fn read(
        &self,
        start: &str,
        url: Url,
        mut response: reqwest::Response,
    ) -> Result<Page, FetchError> {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_ascii_lowercase();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let is_html = mime == "text/html" || mime == "application/xhtml+xml";
        if !(is_html || mime.starts_with("text/") || mime == "application/json") {
            return Err(FetchError::ContentType(mime));
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            let room = self.config.max_bytes - body.len();
            if chunk.len() >= room {
                body.extend_from_slice(&chunk[..room]);
                truncated = chunk.len() > room || response.chunk().await.ok().flatten().is_some();
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let (title, content) = if is_html {
            let page = html::extract(&text);
            (page.title, page.markdown)
        } else {
            (None, text)
        };
        Ok(Page {
            url: start.to_string(),
            final_url: url.to_string(),
            title,
            content_type: mime,
            content,
            truncated,
        })
    }
}

impl Fetcher {
    fn transport(&self, e: &reqwest::Error) -> FetchError {
        if e.is_timeout() {
            return FetchError::Timeout(self.config.timeout);
        }
        FetchError::Network(network_message(e))
    }
}

/// reqwest's message without the URL (it may carry credentials in its query string).
fn network_message(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else {
        "transfer failed"
    };
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(url.as_str(), "<url>");
    }
    format!("{kind}: {message}")
}
