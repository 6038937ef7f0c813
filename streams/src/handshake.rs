//! The HTTP half of a streaming request, as the kubelet (1.21) answers it:
//! subprotocol negotiation over `X-Stream-Protocol-Version`
//! (apimachinery's `httpstream.Handshake`), the SPDY/3.1 upgrade check
//! (`spdy.responseUpgrader`), the `101 Switching Protocols` head, and the
//! refusals, each with the status and text the kubelet sends.
//!
//! No HTTP server here: callers get `http` heads to send with theirs.

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

/// The request header offering subprotocols, one or more times.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// On a failed negotiation, the subprotocols the server takes.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";
/// The upgrade token.
pub const SPDY_31: &str = "SPDY/3.1";

/// Why a request cannot be upgraded: the HTTP answer to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {body}")]
pub struct Rejection {
    /// 400 or 403, as the kubelet.
    pub status: StatusCode,
    /// After a failed negotiation, the subprotocols the server takes (one
    /// [`ACCEPTED_PROTOCOLS_HEADER`] each in the response).
    pub accepted_protocols: Vec<&'static str>,
    /// The message, without Go's trailing newline.
    pub body: String,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            accepted_protocols: Vec::new(),
            body: body.into(),
        }
    }

    /// The response Go's `http.Error` would write: plain text, `nosniff`,
    /// the message and a newline.
    pub fn into_response(self) -> Response<String> {
        let body = format!("{}\n", self.body);
        let length = HeaderValue::from(body.len());
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for p in self.accepted_protocols {
            headers.append(
                HeaderName::from_static(ACCEPTED_PROTOCOLS_HEADER),
                HeaderValue::from_static(p),
            );
        }
        headers.insert(header::CONTENT_LENGTH, length);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// The subprotocols the client offers, in its order (each header may also
/// hold a comma-separated list, as newer apimachinery reads it).
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first of the client's subprotocols the server supports. `None`: the
/// client offered none, which the 1.21 kubelet still accepted (exec falls
/// back to the first protocol, `channel.k8s.io`).
pub(crate) fn negotiate(
    headers: &HeaderMap,
    server: &[&'static str],
) -> Result<Option<&'static str>, Rejection> {
    let client = offered(headers);
    if client.is_empty() {
        return Ok(None);
    }
    for c in &client {
        if let Some(p) = server.iter().find(|s| **s == c.as_str()) {
            return Ok(Some(p));
        }
    }
    let mut rejection = Rejection::new(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
            client.join(" "),
            server.join(" ")
        ),
    );
    rejection.accepted_protocols = server.to_vec();
    Err(rejection)
}

/// The check the SPDY upgrader makes: the first `Connection` header names
/// `upgrade` and the first `Upgrade` header `SPDY/3.1` (both as substrings,
/// any case).
pub(crate) fn check_upgrade(headers: &HeaderMap) -> Result<(), Rejection> {
    let first = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    if first(header::CONNECTION).contains("upgrade") && first(header::UPGRADE).contains("spdy/3.1")
    {
        return Ok(());
    }
    // Go prints the whole header map here; the names are what helps.
    let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    Err(Rejection::new(
        StatusCode::BAD_REQUEST,
        format!(
            "unable to upgrade: missing upgrade headers in request: [{}]",
            names.join(" ")
        ),
    ))
}

/// `101 Switching Protocols` to SPDY/3.1 with the chosen subprotocol.
pub(crate) fn switching(protocol: Option<&str>) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_31));
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(HeaderName::from_static(PROTOCOL_HEADER), p);
    }
    response
}

/// A response head as HTTP/1.1 bytes, for servers that write HTTP by hand;
/// header names in their canonical Go form (`X-Stream-Protocol-Version`).
pub fn encode_head<B>(response: &Response<B>) -> Vec<u8> {
    let status = response.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        out.extend_from_slice(canonical(name.as_str()).as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `x-stream-protocol-version` → `X-Stream-Protocol-Version`.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// The values of `key` in a query string, decoded as forms are (`+` is a
/// space, `%XX` a byte); pairs that do not decode are skipped, as Go's
/// `FormValue` skips them.
pub(crate) fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_form(k)? == key).then(|| decode_form(v))?
        })
        .collect()
}

fn decode_form(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn negotiation_takes_the_clients_first_supported() {
        let server = ["v4.channel.k8s.io", "v3.channel.k8s.io"];
        let h = headers(&[
            ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ]);
        assert_eq!(negotiate(&h, &server), Ok(Some("v3.channel.k8s.io")));
        let h = headers(&[("X-Stream-Protocol-Version", "a, v4.channel.k8s.io")]);
        assert_eq!(negotiate(&h, &server), Ok(Some("v4.channel.k8s.io")));
        assert_eq!(negotiate(&HeaderMap::new(), &server), Ok(None));
    }

    #[test]
    fn failed_negotiation_is_403_with_the_list() {
        let h = headers(&[("X-Stream-Protocol-Version", "v9.channel.k8s.io")]);
        let r = negotiate(&h, &["v4.channel.k8s.io", "channel.k8s.io"]).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            r.body,
            "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io], server accepts [v4.channel.k8s.io channel.k8s.io]"
        );
        assert_eq!(
            r.accepted_protocols,
            ["v4.channel.k8s.io", "channel.k8s.io"]
        );
        let response = r.into_response();
        let accepted: Vec<_> = response
            .headers()
            .get_all(ACCEPTED_PROTOCOLS_HEADER)
            .iter()
            .collect();
        assert_eq!(accepted, ["v4.channel.k8s.io", "channel.k8s.io"]);
        assert_eq!(response.body().lines().count(), 1);
        let head = String::from_utf8(encode_head(&response)).unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        assert!(head.contains("X-Accepted-Stream-Protocol-Versions: channel.k8s.io\r\n"));
        assert!(head.contains("Content-Type: text/plain; charset=utf-8\r\n"));
    }

    #[test]
    fn upgrade_headers() {
        let ok = headers(&[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "spdy/3.1"),
        ]);
        assert!(check_upgrade(&ok).is_ok());
        for bad in [
            headers(&[("Upgrade", "SPDY/3.1")]),
            headers(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]),
        ] {
            assert_eq!(check_upgrade(&bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn switching_head() {
        let head = encode_head(&switching(Some("v4.channel.k8s.io")));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        );
        assert!(switching(None).headers().get(PROTOCOL_HEADER).is_none());
    }

    #[test]
    fn query_decoding() {
        let q = "command=sh&command=-c&command=echo+hi%21&input=1&bad=%zz&tty";
        assert_eq!(query_values(q, "command"), ["sh", "-c", "echo hi!"]);
        assert_eq!(query_values(q, "input"), ["1"]);
        assert!(query_values(q, "bad").is_empty());
        assert_eq!(query_values(q, "tty"), [""]);
        assert!(query_values("", "x").is_empty());
    }
}
