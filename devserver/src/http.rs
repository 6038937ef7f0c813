//! Responses as K3s's supervisor and the Kubernetes API server write them:
//! empty-bodied auth failures, `text/plain` errors, and `Status` objects
//! (pretty-printed for curl and wget, as the API server does).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// A response: a whole body, or a stream (watches).
pub type Reply = Response<BoxBody<Bytes, Infallible>>;

/// A status with no body (the supervisor's 401 and 403).
pub fn empty(status: StatusCode) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = status;
    r
}

/// A body fed through a channel, sent chunked as it comes; it ends when the
/// sender is dropped.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed 200 response with a content type.
pub fn stream(content_type: &'static str, chunks: mpsc::Receiver<Bytes>) -> Reply {
    let mut r = Response::new(ChannelBody(chunks).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A body with a content type.
pub fn body(status: StatusCode, content_type: &'static str, bytes: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(bytes.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text error as K3s's handlers write it: the bare message, no
/// newline, `text/plain; charset=utf-8` (recorded: `node name not set`, 17
/// bytes).
pub fn plain_error(status: StatusCode, message: &str) -> Reply {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(message.as_bytes()),
    )
}

/// Whether the API server would pretty-print for this client: `?pretty=true`,
/// or a curl or wget user agent.
pub fn wants_pretty(user_agent: Option<&str>, query: Option<&str>) -> bool {
    let by_agent = user_agent.is_some_and(|ua| ua.starts_with("curl/") || ua.starts_with("Wget/"));
    let by_query =
        query.is_some_and(|q| q.split('&').any(|p| p == "pretty=true" || p == "pretty=1"));
    by_agent || by_query
}

/// What a failure is about (`Status.details`).
#[derive(Debug, Clone, Copy)]
pub struct Details<'a> {
    /// The object's name.
    pub name: &'a str,
    /// Its API group ("" for core, then left out).
    pub group: &'a str,
    /// Its resource (plural), which the API server calls `kind` here.
    pub kind: &'a str,
}

/// A `metav1.Status` failure, byte for byte as the API server writes it
/// (`metadata` is an empty object, which Go's indenter writes over two lines).
pub fn status(code: StatusCode, reason: &str, message: &str, pretty: bool) -> Reply {
    status_about(code, reason, message, None, pretty)
}

/// [`status`] with `details` naming the object.
pub fn status_about(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Details<'_>>,
    pretty: bool,
) -> Reply {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let (message, reason) = (quote(message), quote(reason));
    let code_number = code.as_u16();
    let details = details.map(|d| {
        let mut fields = vec![("name", quote(d.name))];
        if !d.group.is_empty() {
            fields.push(("group", quote(d.group)));
        }
        fields.push(("kind", quote(d.kind)));
        fields
    });
    let text = if pretty {
        let details = details.map_or(String::new(), |fields| {
            let inner: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("    \"{k}\": {v}"))
                .collect();
            format!("  \"details\": {{\n{}\n  }},\n", inner.join(",\n"))
        });
        format!(
            "{{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {{\n    \n  }},\n  \"status\": \"Failure\",\n  \"message\": {message},\n  \"reason\": {reason},\n{details}  \"code\": {code_number}\n}}"
        )
    } else {
        let details = details.map_or(String::new(), |fields| {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("\"details\":{{{}}},", inner.join(","))
        });
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":{message},\"reason\":{reason},{details}\"code\":{code_number}}}\n"
        )
    };
    let mut r = body(code, "application/json", text);
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded_body(transcript: &str, name: &str) -> String {
        // The transcripts show a body after `---- body (out/<name>, N bytes):`.
        let marker = format!("---- body (out/{name}, ");
        let start = transcript.find(&marker).expect("body in transcript");
        let rest = &transcript[start..];
        let header_end = rest.find('\n').unwrap();
        let len: usize = rest[marker.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        rest[header_end + 1..header_end + 1 + len].to_owned()
    }

    #[test]
    fn unauthorized_status_is_byte_for_byte_the_recorded_one() {
        let transcript = include_str!("../fixtures/recorded-k3s-v1.21/transcript2.txt");
        let recorded = recorded_body(transcript, "e9");
        let ours = status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            true,
        );
        let bytes = futures_bytes(ours);
        assert_eq!(bytes, recorded);
        assert_eq!(bytes.len(), 165);
    }

    fn futures_bytes(r: Reply) -> String {
        use http_body_util::BodyExt as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let collected = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(collected.to_vec()).unwrap()
    }

    #[test]
    fn statuses_with_details_are_the_recorded_ones() {
        let transcript = include_str!("../fixtures/recorded-k3s-v1.21/transcript2.txt");
        let nodes = |name| Details {
            name,
            group: "",
            kind: "nodes",
        };
        let not_found = status_about(
            StatusCode::NOT_FOUND,
            "NotFound",
            "nodes \"rust-edge-1\" not found",
            Some(nodes("rust-edge-1")),
            true,
        );
        assert_eq!(futures_bytes(not_found), recorded_body(transcript, "a0"));
        let forbidden = status_about(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "nodes \"someone-else\" is forbidden: node \"rust-edge-1\" is not allowed to modify node \"someone-else\"",
            Some(nodes("someone-else")),
            true,
        );
        assert_eq!(futures_bytes(forbidden), recorded_body(transcript, "a6"));
        let compact = futures_bytes(status_about(
            StatusCode::CONFLICT,
            "AlreadyExists",
            "x",
            Some(Details {
                name: "n",
                group: "coordination.k8s.io",
                kind: "leases",
            }),
            false,
        ));
        let parsed: serde_json::Value = serde_json::from_str(&compact).unwrap();
        assert_eq!(parsed["details"]["group"], "coordination.k8s.io");
        assert_eq!(parsed["code"], 409);
    }

    #[test]
    fn pretty_for_curl_and_wget_only() {
        assert!(wants_pretty(Some("curl/7.88.1"), None));
        assert!(wants_pretty(Some("Wget/1.21"), None));
        assert!(!wants_pretty(Some("kubectl/v1.20.0 (linux/amd64)"), None));
        assert!(wants_pretty(None, Some("a=b&pretty=true")));
        assert!(!wants_pretty(None, None));
    }
}
