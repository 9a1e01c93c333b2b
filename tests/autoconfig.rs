//! Clients that configure themselves: every HTTP endpoint fetched with curl over
//! real TLS and parsed with real parsers (Python's XML and plist modules), and
//! submission in whatever mode the client picks, on any port, even 443.

use crate::common::*;

const HTTP: &str = "[http]\naddr = \"127.0.0.1:0\"\ntls_addr = \"127.0.0.1:0\"\nsubmission_on_tls = true\nimap = \"imap.example.com:993\"\n";

fn curl(args: &[&str]) -> (String, String) {
    require_tool("curl");
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), status.to_string())
}

/// Prints `tag=value` for every element of an XML document, in order.
const XML_FIELDS: &str = r#"
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
for el in root.iter():
    tag = el.tag.split("}")[-1]
    if el.text and el.text.strip():
        print(f"{tag}={el.text.strip()}")
    for k, v in el.attrib.items():
        print(f"{tag}@{k}={v}")
"#;

fn xml_fields(xml: &str) -> Vec<String> {
    let out = run_with_stdin(
        std::process::Command::new("python3").args(["-c", XML_FIELDS]),
        xml,
    );
    assert!(
        out.status.success(),
        "not XML: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn values<'a>(fields: &'a [String], tag: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter_map(|f| f.strip_prefix(&format!("{tag}=")))
        .collect()
}

#[test]
fn thunderbird_autoconfig_lists_every_submission_port_in_order() {
    let s = TestServer::start(HTTP);
    let [plain, tls] = s.http_addrs()[..] else {
        panic!("two http addresses")
    };
    let expected_ports =
        [s.port("submissions"), s.port("submission"), tls.port()].map(|p| p.to_string());
    for (url, host) in [
        (
            format!("http://{plain}/mail/config-v1.1.xml"),
            Some("autoconfig.example.com"),
        ),
        (
            format!(
                "https://{tls}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.com"
            ),
            None,
        ),
    ] {
        let mut args = vec![url.as_str()];
        let header = host.map(|h| format!("Host: {h}"));
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        let (body, status) = curl(&args);
        assert_eq!(status, "200", "{url}: {body}");
        let f = xml_fields(&body);
        assert_eq!(values(&f, "domain"), ["example.com"]);
        let ports = values(&f, "port");
        assert_eq!(ports[0], "993", "incoming IMAP first");
        assert_eq!(
            ports[1..],
            expected_ports
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()[..],
            "{body}"
        );
        assert_eq!(values(&f, "socketType"), ["SSL", "SSL", "STARTTLS", "SSL"]);
        assert!(
            values(&f, "username")
                .iter()
                .all(|u| *u == "%EMAILADDRESS%")
        );
        assert_eq!(values(&f, "hostname")[1], "mx.test.example");
        assert!(
            !ports.contains(&s.port("mta").to_string().as_str()),
            "the MTA port is not for clients"
        );
    }
    let (_, status) = curl(&[
        "-H",
        "Host: autoconfig.other.example",
        &format!("http://{plain}/mail/config-v1.1.xml"),
    ]);
    assert_eq!(status, "404", "no word about domains not hosted here");
}

/// Connects from source address `from` to `port` of the server (implicit
/// TLS with "ssl", else STARTTLS) and, with a user, logs in; prints OK.
const LOGIN_FROM: &str = r#"
import smtplib, ssl, sys
mode, src, port, user, password = sys.argv[1:6]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
if mode == "ssl":
    s = smtplib.SMTP_SSL("127.0.0.1", int(port), context=ctx, source_address=(src, 0), timeout=20)
else:
    s = smtplib.SMTP("127.0.0.1", int(port), source_address=(src, 0), timeout=20)
    s.starttls(context=ctx)
s.ehlo("client.test")
if user:
    s.login(user, password)
s.quit()
print("OK")
"#;

fn session_from(from: &str, mode: &str, port: u16, login: bool) {
    let (user, password) = if login {
        ("alice@example.com", PASSWORD)
    } else {
        ("", "")
    };
    let out = run_with_stdin(
        std::process::Command::new("python3").args([
            "-c",
            LOGIN_FROM,
            mode,
            from,
            &port.to_string(),
            user,
            password,
        ]),
        "",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "OK",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The outgoing ports autoconfig lists for a client at source address `from`.
fn outgoing_ports_for(s: &TestServer, from: &str) -> Vec<u16> {
    let plain = s.http_addrs()[0];
    let (body, status) = curl(&[
        "--interface",
        from,
        "-H",
        "Host: autoconfig.example.com",
        &format!("http://{plain}/mail/config-v1.1.xml"),
    ]);
    assert_eq!(status, "200", "{body}");
    values(&xml_fields(&body), "port")[1..]
        .iter()
        .map(|p| p.parse().expect("port"))
        .collect()
}

/// Issue #16: the server remembers per client network which submission
/// ports its sessions reached and logged in on, and autoconfig lists for
/// each network the ports that worked from there first, and last those
/// reached again and again without a login; a network it knows nothing of
/// gets the usual order; the records outlive a restart.
#[test]
fn autoconfig_lists_first_the_ports_that_worked_from_the_clients_network() {
    // Fixed ports: the records are by port, and the server restarts below.
    let [submission, submissions, plain, tls] = [(); 4].map(|()| free_port());
    let mut s = TestServer::configure(&format!(
        "hostname = \"mx.test.example\"\ndata_dir = \"data\"\n\
         [[listener]]\naddr = \"127.0.0.1:{submission}\"\nrole = \"submission\"\n\
         [[listener]]\naddr = \"127.0.0.1:{submissions}\"\nrole = \"submissions\"\n\
         [http]\naddr = \"127.0.0.1:{plain}\"\ntls_addr = \"127.0.0.1:{tls}\"\n\
         submission_on_tls = true\nimap = \"imap.example.com:993\"\n\
         [delivery]\nhold = true\n"
    ));
    s.add_alice();
    s.spawn();
    let usual = vec![submissions, submission, tls];
    assert_eq!(outgoing_ports_for(&s, "127.0.1.5"), usual);
    // From 127.0.1.0/24 only STARTTLS on the submission port got through.
    session_from("127.0.1.5", "starttls", submission, true);
    session_from("127.0.1.9", "starttls", submission, true);
    // From 127.0.2.0/24 only 443, and the implicit-TLS port reached three
    // times without a login (something on the way that never lets it).
    session_from("127.0.2.7", "ssl", tls, true);
    for _ in 0..3 {
        session_from("127.0.2.7", "ssl", submissions, false);
    }
    let first_net = vec![submission, submissions, tls];
    let second_net = vec![tls, submission, submissions];
    assert_eq!(outgoing_ports_for(&s, "127.0.1.200"), first_net);
    assert_eq!(outgoing_ports_for(&s, "127.0.2.200"), second_net);
    assert_eq!(outgoing_ports_for(&s, "127.0.3.1"), usual);
    // Written to the store (a few seconds at a time, and at shutdown).
    s.send_term();
    s.wait_exit(std::time::Duration::from_secs(20));
    s.spawn();
    assert_eq!(
        outgoing_ports_for(&s, "127.0.1.200"),
        first_net,
        "{}",
        s.log()
    );
    assert_eq!(outgoing_ports_for(&s, "127.0.2.200"), second_net);
    // The switch turns it off: one order for everyone.
    let off = TestServer::start(&format!("{HTTP}ports_by_network = false\n"));
    let (submissions, submission) = (off.port("submissions"), off.port("submission"));
    session_from("127.0.1.5", "starttls", submission, true);
    let tls = off.http_addrs()[1].port();
    assert_eq!(
        outgoing_ports_for(&off, "127.0.1.200"),
        [submissions, submission, tls]
    );
}

#[test]
fn autodiscover_post_and_get_escape_what_they_echo() {
    let s = TestServer::start(HTTP);
    let tls = s.http_addrs()[1];
    let request = "<?xml version=\"1.0\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>alice@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>";
    let (body, status) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: text/xml",
        "--data",
        request,
        &format!("https://{tls}/autodiscover/autodiscover.xml"),
    ]);
    assert_eq!(status, "200", "{body}");
    let f = xml_fields(&body);
    assert_eq!(values(&f, "Type"), ["IMAP", "SMTP", "SMTP", "SMTP"]);
    assert_eq!(values(&f, "Port")[1], s.port("submissions").to_string());
    assert!(
        values(&f, "LoginName")
            .iter()
            .all(|l| *l == "alice@example.com")
    );
    let (body, status) = curl(&[&format!(
        "https://{tls}/autodiscover/autodiscover.xml?emailaddress=a%3Cb%26c%40example.com"
    )]);
    assert_eq!(status, "200", "{body}");
    assert!(
        values(&xml_fields(&body), "LoginName")
            .iter()
            .all(|l| *l == "a<b&c@example.com"),
        "{body}"
    );
    let (_, status) = curl(&[&format!(
        "https://{tls}/autodiscover/autodiscover.xml?emailaddress=x%40other.example"
    )]);
    assert_eq!(status, "404");
}

const PLIST: &str = r#"
import sys, plistlib
p = plistlib.loads(sys.stdin.buffer.read())
a = p["PayloadContent"][0]
print(p["PayloadType"], a["PayloadType"], a["EmailAddress"], a["OutgoingMailServerHostName"], a["OutgoingMailServerPortNumber"], a["OutgoingMailServerUseSSL"], a["IncomingMailServerHostName"], a["IncomingMailServerPortNumber"])
"#;

#[test]
fn apple_profile_is_a_valid_plist() {
    let s = TestServer::start(HTTP);
    let tls = s.http_addrs()[1];
    let (body, status) = curl(&[&format!(
        "https://{tls}/apple/alice@example.com.mobileconfig"
    )]);
    assert_eq!(status, "200", "{body}");
    let out = run_with_stdin(
        std::process::Command::new("python3").args(["-c", PLIST]),
        &body,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "Configuration com.apple.mail.managed alice@example.com mx.test.example {} True imap.example.com 993",
            s.port("submissions")
        )
    );
}

/// Issue #9 item 7: the profile's file name is the validated address in its
/// canonical form, never the request path echoed.
#[test]
fn apple_profile_file_name_is_the_canonical_address() {
    let s = TestServer::start(HTTP);
    let tls = s.http_addrs()[1];
    require_tool("curl");
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-", "--max-time", "20"])
        .arg(format!(
            "https://{tls}/apple/Alice%5C%22%3Bx=1@Example.COM..mobileconfig"
        ))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(
        headers.contains(
            "content-disposition: attachment; filename=\"alice___x_1@example.com.mobileconfig\"\r\n"
        ),
        "{headers}"
    );
}

#[test]
fn mta_sts_metrics_and_port_echo() {
    let s = TestServer::start(&format!("{HTTP}mta_sts_mode = \"enforce\"\n"));
    let plain = s.http_addrs()[0];
    let (body, status) = curl(&[
        "-H",
        "Host: mta-sts.example.com",
        &format!("http://{plain}/.well-known/mta-sts.txt"),
    ]);
    assert_eq!(status, "200");
    assert_eq!(
        body,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.test.example\r\nmax_age: 604800\r\n"
    );
    let (mut c, _) = Raw::connect(s.addr("submission"));
    c.cmd("EHLO check-0123456789abcdef0123456789abcdef.postern.invalid");
    let (body, _) = curl(&[&format!(
        "http://{plain}/.well-known/postern/echo/0123456789abcdef0123456789abcdef"
    )]);
    assert_eq!(
        body,
        format!(
            "{{\"addr\":\"127.0.0.1\",\"ports\":[{}],\"token\":\"0123456789abcdef0123456789abcdef\"}}",
            s.port("submission")
        )
    );
    let (body, status) = curl(&[&format!("http://{plain}/metrics")]);
    assert_eq!(status, "200");
    assert!(
        body.contains(&format!(
            "postern_connections_total{{port=\"{}\",role=\"submission\"}} 1",
            s.port("submission")
        )),
        "{body}"
    );
}

#[test]
fn any_mode_on_any_port_and_smtp_on_the_https_port() {
    let s = TestServer::start(HTTP);
    let auth = alice_to_bob("PLAIN");
    // "SSL/TLS" chosen on the STARTTLS port, and "STARTTLS" chosen on 465.
    let implicit_on_587 = swaks(s.addr("submission"), &[&["--tlsc"], &auth[..]].concat());
    assert!(
        text(&implicit_on_587).contains("250 2.0.0 Ok: queued as"),
        "{}",
        text(&implicit_on_587)
    );
    let starttls_on_465 = swaks(s.addr("submissions"), &[&["--tls"], &auth[..]].concat());
    assert!(
        text(&starttls_on_465).contains("250 2.0.0 Ok: queued as"),
        "{}",
        text(&starttls_on_465)
    );
    // Port 443 serves a mail client and a browser alike.
    let tls = s.http_addrs()[1];
    let r = smtplib_send(
        "ssl",
        tls,
        Some(("alice@example.com", PASSWORD)),
        "alice@example.com",
        "bob@remote.example",
        "From: alice@example.com\nSubject: 443\n\nhi\n",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    let (body, status) = curl(&[&format!(
        "https://{tls}/mail/config-v1.1.xml?emailaddress=alice%40example.com"
    )]);
    assert_eq!(status, "200");
    assert!(body.contains("<clientConfig"), "{body}");
    assert_eq!(s.queue().len(), 3);
}

#[test]
fn alpn_smtp_on_the_https_port_gets_a_greeting_at_once() {
    let s = TestServer::start(HTTP);
    let tls = s.http_addrs()[1];
    let out = s_client(
        tls,
        &["-alpn", "smtp", "-quiet"],
        "EHLO client.test\r\nQUIT\r\n",
    );
    let t = text(&out);
    assert!(t.contains("220 mx.test.example ESMTP Postern"), "{t}");
    assert!(
        t.contains("250-AUTH PLAIN LOGIN") || t.contains("250 AUTH PLAIN LOGIN"),
        "AUTH is offered: the session knows it is encrypted: {t}"
    );
}
