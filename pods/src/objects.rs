//! The API objects a pod refers to, read through a trait the agent implements
//! over its watches (the kubelet's ConfigMap/Secret managers and Service lister),
//! so this crate never talks to the API server itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

/// Why an object could not be looked up (as opposed to "it does not exist",
/// which is `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The agent's cache cannot answer yet (watch not synced, API unreachable):
    /// the kubelet reports the API error as is and retries on the next sync.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads ConfigMaps, Secrets and Services as the agent's watches see them.
pub trait ObjectSource {
    /// The ConfigMap `namespace/name`; `Ok(None)` when it does not exist.
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, LookupError>;
    /// The Secret `namespace/name`; `Ok(None)` when it does not exist.
    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError>;
    /// Every Service of `namespace` (for service environment variables).
    fn services(&self, namespace: &str) -> Result<Vec<Service>, LookupError>;
}

/// An [`ObjectSource`] over in-memory maps: for tests, and for callers that
/// snapshot their caches.
#[derive(Debug, Clone, Default)]
pub struct MapObjects {
    /// ConfigMaps by (namespace, name).
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), Secret>,
    /// Services by (namespace, name).
    pub services: BTreeMap<(String, String), Service>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl MapObjects {
    /// Adds a ConfigMap under its own namespace and name.
    pub fn add_config_map(&mut self, cm: ConfigMap) -> &mut Self {
        self.config_maps.insert(key_of(&cm.metadata), cm);
        self
    }

    /// Adds a Secret under its own namespace and name.
    pub fn add_secret(&mut self, secret: Secret) -> &mut Self {
        self.secrets.insert(key_of(&secret.metadata), secret);
        self
    }

    /// Adds a Service under its own namespace and name.
    pub fn add_service(&mut self, service: Service) -> &mut Self {
        self.services.insert(key_of(&service.metadata), service);
        self
    }
}

impl ObjectSource for MapObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, LookupError> {
        Ok(self
            .config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError> {
        Ok(self
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    fn services(&self, namespace: &str) -> Result<Vec<Service>, LookupError> {
        Ok(self
            .services
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, s)| s.clone())
            .collect())
    }
}
