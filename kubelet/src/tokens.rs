//! Service-account tokens for pods' projected volumes, obtained with the
//! TokenRequest API and refreshed as the kubelet's token manager refreshes
//! them (`k8s121:pkg/kubelet/token/token_manager.go`).
//!
//! For each `serviceAccountToken` source of a pod's projected volumes, the pod
//! worker awaits [`TokenManager::refresh_for`], which POSTs
//! `/api/v1/namespaces/<ns>/serviceaccounts/<sa>/token` (bound to the pod)
//! when no token is cached or the cached one is older than 80 % of its
//! lifetime or 24 h; [`armlet_pods`] then reads the token synchronously
//! through [`TokenSource`]. [`TokenManager::next_refresh_for`] says when the
//! worker should come back to rewrite the volume.
//!
//! Token age is measured on the monotonic clock from the moment the request
//! was sent, not from the server's `expirationTimestamp`: boards without a
//! real-time clock boot with a wrong wall clock, which would make every token
//! look expired (or eternal) until NTP catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use armlet_pods::objects::LookupError;
use armlet_pods::volumes::{TokenRequest, TokenSource};
use k8s_openapi::api::authentication::v1 as authn;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

use crate::objects::{bounded, lock, namespace_of};

/// The lifetime requested when a projection sets no `expirationSeconds`.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// A token older than this is refreshed whatever its lifetime (the kubelet's
/// `maxTTL`).
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// After a failed refresh, while the cached token is still valid, how long
/// before the next attempt (so that a board that lost its network does not
/// hold every pod sync on a request that times out).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Identifies one cached token, as the kubelet's token manager keys them
/// (service account, namespace, the request's spec): the same pod asking the
/// same thing gets the same token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
    /// The audience; `None` is the API server's.
    pub audience: Option<String>,
    /// The requested lifetime in seconds.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_uid: String,
}

impl TokenKey {
    /// The key of a request from armlet-pods.
    pub fn of(request: &TokenRequest<'_>) -> Self {
        Self {
            namespace: request.namespace.to_owned(),
            service_account: request.service_account.to_owned(),
            audience: request.audience.map(str::to_owned),
            expiration_seconds: request.expiration_seconds,
            pod_uid: request.pod_uid.to_owned(),
        }
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}/{:?} for pod {} (audience {:?}, {}s)",
            self.namespace,
            self.service_account,
            self.pod_uid,
            self.audience.as_deref().unwrap_or(""),
            self.expiration_seconds
        )
    }
}

/// The tokens `pod`'s projected volumes need, keyed exactly as armlet-pods
/// asks for them (service account `default` when unset, an empty audience
/// meaning the server's, [`DEFAULT_EXPIRATION_SECONDS`]).
pub fn token_keys(pod: &Pod) -> BTreeSet<TokenKey> {
    let spec = pod.spec.as_ref();
    let service_account = spec
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let sources = spec
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.as_deref().unwrap_or_default())
        .filter_map(|s| s.service_account_token.as_ref());
    sources
        .map(|t| TokenKey {
            namespace: namespace_of(pod).to_owned(),
            service_account: service_account.to_owned(),
            audience: t.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        })
        .collect()
}

/// How long after it was obtained a token of `lifetime` is refreshed: at 80 %
/// of its lifetime, and at the latest after [`MAX_TOKEN_AGE`] (the kubelet's
/// `requiresRefresh`, without its up-to-10-s random jitter).
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(lifetime / 5).min(MAX_TOKEN_AGE)
}

/// A token the API server issued.
#[derive(Clone)]
struct Issued {
    token: String,
    /// When the request was sent: the token was issued after this, so ages
    /// counted from here err on the early side.
    obtained: Instant,
    /// The lifetime the server granted (its `spec.expirationSeconds`).
    lifetime: Duration,
}

impl Issued {
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.obtained)
    }

    fn valid(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime
    }
}

/// What the manager knows of one [`TokenKey`].
#[derive(Default)]
struct Slot {
    issued: Option<Issued>,
    /// The last failed request: when, and why.
    failure: Option<(Instant, String)>,
}

impl Slot {
    fn usable(&self, now: Instant) -> bool {
        self.issued.as_ref().is_some_and(|t| t.valid(now))
    }

    /// When a request is next worth making: when the token is due for a
    /// refresh, but no sooner than `retry` after a failure. `None` when there
    /// is no valid token: such a slot is requested on every refresh (the pod
    /// cannot run without it; the pod worker's back-off paces the attempts).
    fn next_attempt(&self, now: Instant, retry: Duration) -> Option<Instant> {
        let issued = self.issued.as_ref().filter(|t| t.valid(now))?;
        let due = issued
            .obtained
            .checked_add(refresh_after(issued.lifetime))
            .unwrap_or(now);
        let after_failure = self
            .failure
            .as_ref()
            .and_then(|(at, _)| at.checked_add(retry))
            .unwrap_or(due);
        Some(due.max(after_failure))
    }

    fn due(&self, now: Instant, retry: Duration) -> bool {
        self.next_attempt(now, retry).is_none_or(|at| at <= now)
    }

    /// The token to hand out at `now`, or the kubelet's message for why not.
    fn answer(&self, key: &TokenKey, now: Instant) -> Result<String, LookupError> {
        let why = self.failure.as_ref().map(|(_, e)| e.as_str());
        match (&self.issued, why) {
            (Some(t), _) if t.valid(now) => Ok(t.token.clone()),
            (Some(_), Some(e)) => Err(LookupError::Unavailable(format!(
                "token {key} expired and refresh failed: {e}"
            ))),
            (Some(_), None) => Err(LookupError::Unavailable(format!("token {key} expired"))),
            (None, Some(e)) => Err(LookupError::Unavailable(format!(
                "failed to fetch token: {e}"
            ))),
            (None, None) => Err(not_requested(key)),
        }
    }
}

fn not_requested(key: &TokenKey) -> LookupError {
    LookupError::Unavailable(format!(
        "failed to fetch token: token {key} has not been requested yet"
    ))
}

/// Obtains, caches and refreshes pods' service-account tokens: a cheap,
/// cloneable handle (clones share the cache). See the module documentation.
#[derive(Clone)]
pub struct TokenManager {
    client: kube::Client,
    slots: Arc<Mutex<BTreeMap<TokenKey, Slot>>>,
    retry: Duration,
    timeout: Duration,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens.
        f.debug_struct("TokenManager")
            .field("tokens", &lock(&self.slots).len())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// No tokens yet; requests go through `client` (the node's identity), with
    /// [`DEFAULT_RETRY_INTERVAL`] and
    /// [`crate::objects::DEFAULT_REQUEST_TIMEOUT`].
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            slots: Arc::default(),
            retry: DEFAULT_RETRY_INTERVAL,
            timeout: crate::objects::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets how long after a failed refresh the next one is tried, while the
    /// cached token is still valid.
    #[must_use]
    pub fn with_retry_interval(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Sets how long one request may take.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Requests the tokens `pod` needs ([`token_keys`]) that are missing or
    /// due for a refresh. A failed refresh keeps a still-valid token (logged).
    /// Errors with the first token the pod cannot have, with the kubelet's
    /// message (`failed to fetch token: serviceaccounts "x" not found`).
    ///
    /// Also drops the expired tokens of other pods (pods gone without
    /// [`TokenManager::forget`]), as the kubelet's periodic cleanup does.
    pub async fn refresh_for(&self, pod: &Pod) -> Result<(), LookupError> {
        let keys = token_keys(pod);
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let now = Instant::now();
        let due: Vec<&TokenKey> = {
            let mut slots = lock(&self.slots);
            slots.retain(|k, s| k.pod_uid == pod_uid || s.usable(now));
            keys.iter()
                .filter(|k| slots.get(*k).is_none_or(|s| s.due(now, self.retry)))
                .collect()
        };
        for key in due {
            let outcome = self.request(key, pod_name).await;
            let now = Instant::now();
            let mut slots = lock(&self.slots);
            let slot = slots.entry(key.clone()).or_default();
            match outcome {
                Ok(issued) => {
                    tracing::debug!(
                        namespace = key.namespace,
                        service_account = key.service_account,
                        pod = pod_name,
                        lifetime_s = issued.lifetime.as_secs(),
                        "obtained a service account token"
                    );
                    slot.issued = Some(issued);
                    slot.failure = None;
                }
                Err(e) => {
                    if slot.usable(now) {
                        tracing::warn!(token = %key, error = %e, "refreshing a service account token failed; keeping the current one");
                    } else {
                        tracing::debug!(token = %key, error = %e, "requesting a service account token failed");
                    }
                    slot.failure = Some((now, e));
                }
            }
        }
        let now = Instant::now();
        let slots = lock(&self.slots);
        for key in &keys {
            match slots.get(key) {
                Some(slot) => slot.answer(key, now).map(drop)?,
                None => return Err(not_requested(key)),
            }
        }
        Ok(())
    }

    /// POSTs the TokenRequest for `key`, bound to the pod.
    async fn request(&self, key: &TokenKey, pod_name: &str) -> Result<Issued, String> {
        let body = authn::TokenRequest {
            metadata: Default::default(),
            spec: authn::TokenRequestSpec {
                // No audience: an empty list, which the server defaults to
                // its own audiences.
                audiences: key.audience.iter().cloned().collect(),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(authn::BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(pod_name.to_owned()),
                    uid: Some(key.pod_uid.clone()),
                }),
            },
            status: None,
        };
        let data = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), &key.namespace);
        let sent = Instant::now();
        let sent_wall = SystemTime::now();
        let reply: authn::TokenRequest = bounded(
            self.timeout,
            api.create_subresource("token", &key.service_account, &PostParams::default(), data),
        )
        .await?;
        let status = reply
            .status
            .filter(|s| !s.token.is_empty())
            .ok_or_else(|| "the API server answered the TokenRequest without a token".to_owned())?;
        let seconds = reply
            .spec
            .expiration_seconds
            .filter(|s| *s > 0)
            .unwrap_or(key.expiration_seconds);
        let lifetime = Duration::from_secs(seconds.clamp(0, i64::from(u32::MAX)).unsigned_abs());
        // Only to help explain tokens rejected as expired or not yet valid.
        let expires = status.expiration_timestamp.0.timestamp();
        let local = sent_wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .saturating_add(seconds);
        if expires.abs_diff(local) > 300 {
            tracing::debug!(
                skew_s = local.saturating_sub(expires),
                "the node's clock differs from the API server's"
            );
        }
        Ok(Issued {
            token: status.token,
            obtained: sent,
            lifetime,
        })
    }

    /// Drops the tokens bound to the pod `pod_uid` (the pod is gone).
    pub fn forget(&self, pod_uid: &str) {
        lock(&self.slots).retain(|k, _| k.pod_uid != pod_uid);
    }

    /// When the next valid token is due for a refresh (or for a retry after a
    /// failed one); `None` when no valid token is cached. The worker of that
    /// token's pod should then refresh and rewrite the projected volume.
    pub fn next_refresh(&self) -> Option<Instant> {
        let now = Instant::now();
        let slots = lock(&self.slots);
        slots
            .values()
            .filter_map(|s| s.next_attempt(now, self.retry))
            .min()
    }

    /// [`TokenManager::next_refresh`] for the tokens of the pod `pod_uid`.
    pub fn next_refresh_for(&self, pod_uid: &str) -> Option<Instant> {
        let now = Instant::now();
        let slots = lock(&self.slots);
        slots
            .iter()
            .filter(|(k, _)| k.pod_uid == pod_uid)
            .filter_map(|(_, s)| s.next_attempt(now, self.retry))
            .min()
    }
}

impl TokenSource for TokenManager {
    fn token(&self, request: &TokenRequest<'_>) -> Result<String, LookupError> {
        let key = TokenKey::of(request);
        match lock(&self.slots).get(&key) {
            Some(slot) => slot.answer(&key, Instant::now()),
            None => Err(not_requested(&key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fake_api;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const API_ACCESS: &str = r#"
metadata: {name: web, namespace: shop, uid: u-1}
spec:
  serviceAccountName: builder
  containers: [{name: app, image: busybox}]
  volumes:
  - name: kube-api-access-x
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: kube-root-ca.crt}
  - name: vault
    projected:
      sources:
      - serviceAccountToken: {path: vault-token, audience: vault}
      - serviceAccountToken: {path: again, audience: ""}
"#;

    fn key(audience: Option<&str>, seconds: i64) -> TokenKey {
        TokenKey {
            namespace: "shop".into(),
            service_account: "builder".into(),
            audience: audience.map(str::to_owned),
            expiration_seconds: seconds,
            pod_uid: "u-1".into(),
        }
    }

    #[test]
    fn token_keys_follow_the_projections() {
        let keys: Vec<TokenKey> = token_keys(&pod(API_ACCESS)).into_iter().collect();
        assert_eq!(
            keys,
            [key(None, 3600), key(None, 3607), key(Some("vault"), 3600)]
        );
        // The service account defaults to "default"; no projection, no token.
        let bare = pod("metadata: {name: p, uid: u}\nspec: {containers: []}");
        assert!(token_keys(&bare).is_empty());
        let default_sa = pod(
            "metadata: {name: p, uid: u}\nspec: {containers: [], volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: t}}]}}]}",
        );
        let keys: Vec<TokenKey> = token_keys(&default_sa).into_iter().collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].service_account, "default");
        assert_eq!(keys[0].namespace, "default");
    }

    #[test]
    fn keys_match_what_armlet_pods_asks_for() {
        let request = TokenRequest {
            namespace: "shop",
            service_account: "builder",
            pod_name: "web",
            pod_uid: "u-1",
            audience: Some("vault"),
            expiration_seconds: 3600,
        };
        assert!(token_keys(&pod(API_ACCESS)).contains(&TokenKey::of(&request)));
    }

    #[test]
    fn refresh_at_80_percent_or_after_a_day() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(3607)),
            Duration::from_millis(2_885_600)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(365 * 24 * 3600)),
            MAX_TOKEN_AGE
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn slots_refresh_late_in_life_and_back_off_after_failures() {
        let t0 = Instant::now();
        let retry = Duration::from_secs(10);
        let k = key(None, 3600);
        let mut slot = Slot::default();
        assert!(slot.due(t0, retry));
        assert_eq!(slot.answer(&k, t0), Err(not_requested(&k)));
        slot.failure = Some((t0, "serviceaccounts \"builder\" not found".into()));
        // No token: always due, and the lookup says why.
        assert!(slot.due(t0, retry));
        assert_eq!(
            slot.answer(&k, t0),
            Err(LookupError::Unavailable(
                "failed to fetch token: serviceaccounts \"builder\" not found".into()
            ))
        );
        slot.issued = Some(Issued {
            token: "t1".into(),
            obtained: t0,
            lifetime: Duration::from_secs(3600),
        });
        slot.failure = None;
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!slot.due(at(2879), retry));
        assert!(slot.due(at(2880), retry));
        assert_eq!(slot.next_attempt(t0, retry), Some(at(2880)));
        // A failed refresh keeps the token, and waits `retry`.
        slot.failure = Some((at(2900), "connection refused".into()));
        assert_eq!(slot.answer(&k, at(2900)), Ok("t1".into()));
        assert!(!slot.due(at(2905), retry));
        assert!(slot.due(at(2910), retry));
        assert_eq!(slot.next_attempt(at(2905), retry), Some(at(2910)));
        // Expired: the kubelet's message, and no schedule (the pod's sync fails).
        assert!(matches!(
            slot.answer(&k, at(3600)),
            Err(LookupError::Unavailable(m)) if m.ends_with("expired and refresh failed: connection refused")
        ));
        assert_eq!(slot.next_attempt(at(3600), retry), None);
        assert!(slot.due(at(3600), retry));
    }

    fn issue(body: &[u8], token: &str) -> (u16, String) {
        let mut reply: serde_json::Value = serde_json::from_slice(body).unwrap();
        reply["status"] = serde_json::json!({
            "token": token,
            "expirationTimestamp": "2030-01-01T00:00:00Z",
        });
        (201, reply.to_string())
    }

    #[tokio::test]
    async fn tokens_are_requested_bound_to_the_pod_and_reused() {
        let (client, log) = fake_api::serve(|method, path, body| {
            assert_eq!(method, "POST");
            assert!(
                path.starts_with("/api/v1/namespaces/shop/serviceaccounts/builder/token"),
                "{path}"
            );
            issue(body, "signed")
        });
        let tokens = TokenManager::new(client);
        let p = pod(API_ACCESS);
        tokens.refresh_for(&p).await.unwrap();
        tokens.refresh_for(&p).await.unwrap();
        let requests = log.lock().unwrap().clone();
        assert_eq!(requests.len(), 3);
        let bodies: Vec<serde_json::Value> = requests
            .iter()
            .map(|r| serde_json::from_slice(&r.2).unwrap())
            .collect();
        assert_eq!(
            bodies[0],
            serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {},
                "spec": {
                    "audiences": [],
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1"}
                }
            })
        );
        assert_eq!(bodies[2]["spec"]["audiences"], serde_json::json!(["vault"]));

        let request = TokenRequest {
            namespace: "shop",
            service_account: "builder",
            pod_name: "web",
            pod_uid: "u-1",
            audience: None,
            expiration_seconds: 3607,
        };
        assert_eq!(tokens.token(&request), Ok("signed".into()));
        let next = tokens.next_refresh_for("u-1").unwrap();
        let wait = next.saturating_duration_since(Instant::now());
        assert!(wait > Duration::from_secs(2800) && wait <= Duration::from_secs(2886));
        assert_eq!(tokens.next_refresh(), Some(next));

        tokens.forget("u-1");
        assert!(tokens.token(&request).is_err());
        assert_eq!(tokens.next_refresh(), None);
    }

    #[tokio::test]
    async fn failures_report_the_api_servers_message() {
        let (client, _) =
            fake_api::serve(|_, _, _| fake_api::not_found("serviceaccounts", "builder"));
        let tokens = TokenManager::new(client);
        let p = pod(API_ACCESS);
        let expected = LookupError::Unavailable(
            "failed to fetch token: serviceaccounts \"builder\" not found".into(),
        );
        assert_eq!(tokens.refresh_for(&p).await, Err(expected.clone()));
        let request = TokenRequest {
            namespace: "shop",
            service_account: "builder",
            pod_name: "web",
            pod_uid: "u-1",
            audience: Some("vault"),
            expiration_seconds: 3600,
        };
        assert_eq!(tokens.token(&request), Err(expected));

        let down = TokenManager::new(fake_api::unreachable());
        assert!(matches!(
            down.refresh_for(&p).await,
            Err(LookupError::Unavailable(m)) if m.starts_with("failed to fetch token: ")
        ));
    }
}
