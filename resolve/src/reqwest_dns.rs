//! Name resolution for reqwest through this resolver (hosts file, then DNS):
//! armlet's static binary has no NSS, so `getaddrinfo` is not an option for
//! its HTTP clients (registry pulls, the join).

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::Resolver;

/// reqwest's resolver hook over a [`Resolver`].
#[derive(Debug, Clone)]
pub struct ReqwestResolver(pub Arc<Resolver>);

impl Resolve for ReqwestResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // An IP literal needs no lookup (and no blocking thread).
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(Box::new(std::iter::once((ip, 0u16).into())) as Addrs);
            }
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
