//! SPDY/3.1 as Kubernetes speaks it (Go's `spdy` framer inside
//! moby/spdystream): [`frame`] is the codec, [`zlib`] the header
//! compression, [`Connection`] the server side of a connection.

mod conn;
pub mod frame;
pub mod zlib;

pub use conn::{ConnError, Connection, MAX_OUT_FRAME, QUEUE_SOFT, STREAM_BUFFER, SpdyStream};
pub use frame::Headers;
