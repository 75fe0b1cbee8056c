//! Domain filters, the contamination guard: `excluded_domains` or `allowed_domains` (not both),
//! applied to search results and to every fetch target, redirects included.
//!
//! A rule is a host with an optional path prefix. `example.com` matches the host and its
//! subdomains, `*.example.com` only subdomains, `example.com/blog` only paths under `/blog`.
//! Filters combine with [`DomainFilter::and`]: the config's filter and a request's own both
//! apply, so a request can narrow the guard but never lift it.

use url::Url;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainFilter {
    /// Every layer must permit a URL.
    layers: Vec<Layer>,
}

#[derive(Debug, Clone, PartialEq)]
struct Layer {
    allow: bool,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    host: String,
    subdomains_only: bool,
    path: String,
}

impl DomainFilter {
    /// A filter from the two lists; giving both is an error (which one would win is unclear).
    pub fn new(excluded: &[String], allowed: &[String]) -> Result<Self, String> {
        if !excluded.is_empty() && !allowed.is_empty() {
            return Err("give excluded_domains or allowed_domains, not both".into());
        }
        let allow = !allowed.is_empty();
        let rules: Vec<Rule> = excluded
            .iter()
            .chain(allowed)
            .map(|r| Rule::parse(r))
            .collect::<Result<_, _>>()?;
        let layers = if rules.is_empty() {
            Vec::new()
        } else {
            vec![Layer { allow, rules }]
        };
        Ok(Self { layers })
    }

    /// A filter that permits only what both permit.
    pub fn and(mut self, other: DomainFilter) -> DomainFilter {
        self.layers.extend(other.layers);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Whether `url` may be used. URLs without a host are refused by an allow list.
    pub fn permits(&self, url: &Url) -> bool {
        self.layers.iter().all(|layer| layer.permits(url))
    }

    /// `permits` for a URL as text; text that is not a URL is refused.
    pub fn permits_str(&self, url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| self.permits(&u))
    }
}

impl Layer {
    fn permits(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return !self.allow;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let matched = self.rules.iter().any(|r| r.matches(&host, url.path()));
        matched == self.allow
    }
}

impl Rule {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let text = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(&text);
        let (host, path) = match text.split_once('/') {
            Some((host, path)) => (host, format!("/{}", path.trim_end_matches('/'))),
            None => (text, String::new()),
        };
        let (host, subdomains_only) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if host.is_empty() || host.contains(['*', ' ', ':']) {
            return Err(format!("not a domain rule: {text:?}"));
        }
        Ok(Self {
            host: host.to_string(),
            subdomains_only,
            path,
        })
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        let sub = host
            .strip_suffix(&self.host)
            .is_some_and(|rest| rest.ends_with('.'));
        let host_ok = sub || (!self.subdomains_only && host == self.host);
        let path_ok = self.path.is_empty()
            || path == self.path
            || path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'));
        host_ok && path_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn list(rules: &[&str]) -> Vec<String> {
        rules.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exclusions_match_hosts_subdomains_wildcards_and_paths() {
        let f = DomainFilter::new(
            &list(&["huggingface.co", "*.perplexity.ai", "example.com/blog"]),
            &[],
        )
        .unwrap();
        assert!(!f.permits(&url("https://huggingface.co/datasets/x")));
        assert!(!f.permits(&url("https://datasets-server.HuggingFace.co./rows")));
        assert!(f.permits(&url("https://nothuggingface.co/")));
        assert!(!f.permits(&url("https://research.perplexity.ai/a")));
        assert!(
            f.permits(&url("https://perplexity.ai/")),
            "a wildcard means subdomains only"
        );
        assert!(!f.permits(&url("https://example.com/blog")));
        assert!(!f.permits(&url("https://www.example.com/blog/post")));
        assert!(f.permits(&url("https://example.com/blogger")));
        assert!(f.permits(&url("https://example.com/")));
    }

    #[test]
    fn allow_lists_refuse_the_rest_and_both_lists_are_an_error() {
        let f = DomainFilter::new(&[], &list(&["docs.rs"])).unwrap();
        assert!(f.permits(&url("https://docs.rs/tokio")));
        assert!(!f.permits(&url("https://crates.io/")));
        assert!(DomainFilter::new(&list(&["a.com"]), &list(&["b.com"])).is_err());
        assert!(DomainFilter::new(&list(&["a b"]), &[]).is_err());
        assert!(DomainFilter::default().permits(&url("https://anything.org/")));
    }

    #[test]
    fn combined_filters_permit_only_what_both_permit() {
        let config = DomainFilter::new(&list(&["huggingface.co"]), &[]).unwrap();
        let request = DomainFilter::new(&[], &list(&["huggingface.co", "docs.rs"])).unwrap();
        let both = config.and(request);
        assert!(
            !both.permits(&url("https://huggingface.co/x")),
            "the request cannot lift the guard"
        );
        assert!(both.permits(&url("https://docs.rs/x")));
        assert!(!both.permits(&url("https://example.org/")));
        assert!(!both.permits_str("not a url"));
    }
}
