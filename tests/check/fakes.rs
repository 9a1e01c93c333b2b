//! Servers that misbehave on purpose for `postern check` tests, and the
//! private CA that signs the real server's certificate.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

/// A private CA and a certificate it signed for `names`; returns the paths
/// of the CA certificate, the server certificate and its key.
pub fn ca_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Postern Test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// An SMTP server that poses as mail.test.example, offers no STARTTLS and
/// claims in the port echo to have seen everything on 25.
pub const MIMIC: &str = r#"
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("READY", flush=True)
def serve(c):
    c.sendall(b"220 mail.test.example ESMTP Postern\r\n")
    for line in c.makefile("rb"):
        cmd = line.strip().upper()
        if cmd.startswith(b"EHLO"):
            c.sendall(b"250-mail.test.example\r\n250 AUTH PLAIN LOGIN\r\n")
        elif cmd.startswith(b"NOOP"):
            c.sendall(b"250 2.0.0 Ok; postern-echo ports=25\r\n")
        elif cmd.startswith(b"QUIT"):
            c.sendall(b"221 Bye\r\n"); break
        else:
            c.sendall(b"502 5.5.1 No\r\n")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A TCP server on loopback whose every connection gets `behave`.
pub fn fake(behave: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || behave(conn));
        }
    });
    port
}

pub fn hold(mut c: TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
}

/// A web server: answers whatever arrives with an HTTP error.
pub fn http_400(mut c: TcpStream) {
    let mut buf = [0u8; 4096];
    if matches!(c.read(&mut buf), Ok(n) if n > 0) {
        let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    }
}
