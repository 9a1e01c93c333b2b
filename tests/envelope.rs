//! Issue #9, the envelope: who a session is after AUTH, which recipients are
//! ours (also under the server's own host name), duplicate recipients, and the
//! DSN parameters ENVID and ORCPT as clients encode them.

use crate::common::*;

#[test]
fn issue_9_auth_in_any_case_with_a_trailing_dot_sends_as_the_account() {
    let s = TestServer::start("");
    let out = swaks(
        s.addr("submission"),
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "Alice@Example.COM.",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@example.com",
            "--to",
            "bob@remote.example",
            "--header",
            "From: Alice <alice@example.com>",
        ],
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("250 2.0.0 Ok: queued as"),
        "{t}"
    );
    let q = s.queue();
    assert_eq!(q[0]["auth_user"], "alice@example.com", "{q:?}");
    assert!(s.log().contains("event=\"auth_ok\" user=alice@example.com"));
}
