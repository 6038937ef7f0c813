//! The devserver harness the agent's tests stand on: it starts the server,
//! reads its token and joins a node by hand.

use armlet_tests::devserver::Devserver;
use armlet_tests::node::TempDir;

#[test]
fn the_harness_starts_a_server_and_joins_a_node() {
    let scratch = TempDir::new("devserver-harness");
    let server = Devserver::start(&scratch.path().join("data"));
    let token = server.token();
    assert!(token.starts_with("K10") && token.ends_with(armlet_tests::devserver::PASSWORD));
    let credentials = server.join_node(
        &scratch.path().join("n1"),
        "n1",
        std::net::IpAddr::from([127, 0, 0, 1]),
    );
    let client = std::fs::read_to_string(&credentials.client_crt).unwrap();
    assert!(client.starts_with("-----BEGIN CERTIFICATE-----"));
    // The claim is now a Secret the admin can see.
    let secret = server
        .get("/api/v1/namespaces/kube-system/secrets/n1.node-password.k3s")
        .expect("the node-password Secret");
    assert_eq!(secret["immutable"], true);
    assert!(
        server
            .get("/api/v1/namespaces/kube-system/secrets/n2.node-password.k3s")
            .is_none()
    );
}
