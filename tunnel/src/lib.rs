//! K3s's websocket tunnel, rancher/remotedialer's wire protocol: an agent
//! opens `wss://<server>/v1-k3s/connect` with its kubelet client certificate,
//! and the server dials the node's kubelet through it (`kubectl logs`,
//! `exec`, `port-forward` and node proxy requests).
//!
//! - [`frame`]: the message codec (golden bytes from a real K3s v1.21 server).
//! - [`ws`]: the websocket underneath (RFC 6455, written here: see there why).
//! - [`server`]: [`Tunnels`], the server's sessions by node name, and dials.
//! - [`client`]: the agent's side, which dials what an authoriser allows.
//!
//! Both ends share [`TunnelStream`], a tokio byte stream for one connection.

pub mod client;
pub mod frame;
pub mod server;
mod session;
pub mod ws;

pub use server::{TunnelError, Tunnels};
pub use session::{
    CONNECT_DEADLINE_MS, FRAMES_IN_FLIGHT, IDLE_TIMEOUT, MAX_DATA, PING_INTERVAL, SessionError,
    TunnelStream,
};
