//! Name resolution for reqwest through `armlet-resolve` (hosts file, then
//! DNS): the static binary has no NSS, so `getaddrinfo` is not an option.

use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// reqwest's resolver hook over armlet's stub resolver.
pub(super) struct Dns(pub(super) Arc<armlet_resolve::Resolver>);

impl Resolve for Dns {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The lookup blocks on sockets: keep it off the async workers.
            let addrs = tokio::task::spawn_blocking(move || {
                // The port is the URL's; hyper sets it on every address.
                resolver.lookup_socket_addrs(&host, 0)
            })
            .await??;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
