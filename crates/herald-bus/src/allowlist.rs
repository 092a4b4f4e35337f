//! The webhook host allow-list: when configured, webhooks may only target (and be
//! redirected to) listed hosts, so Herald cannot be used to reach internal services
//! (SSRF).
//!
//! Invariants: an absent list allows every host; entries are exact host names or IP
//! literals, or `*.domain` for any subdomain of `domain` (not `domain` itself);
//! comparison ignores ASCII case and a trailing dot; ports are not part of the match.

/// Hosts webhooks may reach; `None` inside means no restriction.
#[derive(Debug, Clone, Default)]
pub struct HostAllowList {
    hosts: Option<Vec<String>>,
}

fn normalize(host: &str) -> String {
    host.trim()
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl HostAllowList {
    /// No restriction.
    pub fn any() -> Self {
        Self { hosts: None }
    }

    /// Only `hosts` (an empty list allows nothing).
    pub fn only<I: IntoIterator<Item = S>, S: AsRef<str>>(hosts: I) -> Self {
        Self {
            hosts: Some(
                hosts
                    .into_iter()
                    .map(|h| normalize(h.as_ref()))
                    .filter(|h| !h.is_empty())
                    .collect(),
            ),
        }
    }

    pub fn is_restricted(&self) -> bool {
        self.hosts.is_some()
    }

    pub fn allows(&self, host: &str) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let host = normalize(host);
        hosts.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => *entry == host,
        })
    }

    /// Whether a URL's host is allowed (a URL without a host is not).
    pub fn allows_url(&self, url: &reqwest::Url) -> bool {
        !self.is_restricted() || url.host_str().is_some_and(|h| self.allows(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        let list = HostAllowList::only(["hooks.example.com", "*.partner.io", "10.0.0.7", "[::1]"]);
        assert!(list.allows("hooks.example.com"));
        assert!(list.allows("HOOKS.example.com."));
        assert!(!list.allows("evil-hooks.example.com"));
        assert!(!list.allows("example.com"));
        assert!(list.allows("a.partner.io"));
        assert!(list.allows("a.b.partner.io"));
        assert!(!list.allows("partner.io"));
        assert!(!list.allows("xpartner.io"));
        assert!(list.allows("10.0.0.7"));
        assert!(!list.allows("127.0.0.1"));
        assert!(list.allows("[::1]"));
        assert!(HostAllowList::any().allows("169.254.169.254"));
        assert!(!HostAllowList::only(Vec::<String>::new()).allows("a"));
        let url = reqwest::Url::parse("http://localhost:8080/x").unwrap();
        assert!(!list.allows_url(&url));
        assert!(HostAllowList::any().allows_url(&url));
    }
}
