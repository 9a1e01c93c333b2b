//! Clients that hold a session without doing its work: one that never reads
//! its replies, one that sends a command or a body a byte at a time, and a
//! flood of connections. Each must be dropped in bounded time, and the server
//! must serve normally afterwards.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

/// The first line the server sends on a new connection.
fn greeting(addr: SocketAddr) -> String {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

#[test]
fn a_client_that_never_reads_its_replies_is_dropped() {
    let s = TestServer::start("[limits]\ncommand_timeout = 2\nmax_connections_per_ip = 1\n");
    let addr = s.addr("mta");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // Pipelined NOOPs, never a read: the replies fill both socket buffers.
    let noops = "NOOP\r\n".repeat(20_000);
    let start = Instant::now();
    while stream.write_all(noops.as_bytes()).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the server never stopped reading"
        );
    }
    // The one slot this address has is held until the session is dropped.
    // Generous: under load the server may still be working through the
    // megabytes of NOOPs its socket buffer took before it blocks.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = greeting(addr);
        if line.starts_with("220 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session that never reads still holds its slot: {line}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends `bytes` one at a time, 300 ms apart, on a thread; never a whole line.
fn dribble(mut stream: TcpStream, bytes: &'static [u8]) {
    std::thread::spawn(move || {
        for b in bytes.iter().cycle() {
            if stream.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
}

/// Reads until the server closes; returns what it said and how long it took.
fn until_closed(stream: TcpStream) -> (String, Duration) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut said = String::new();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return (said, start.elapsed()),
            Ok(_) => said.push_str(&line),
        }
    }
}

#[test]
fn a_command_sent_a_byte_at_a_time_is_timed_out() {
    let s = TestServer::start("[limits]\ncommand_timeout = 2\n");
    let stream = TcpStream::connect(s.addr("mta")).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut banner = String::new();
    reader.read_line(&mut banner).expect("banner");
    dribble(stream.try_clone().expect("clone"), b"NOOP");
    let (said, took) = until_closed(stream);
    assert!(said.starts_with("421 4.4.2"), "{said}");
    assert!(took < Duration::from_secs(6), "held for {took:?}");
}

#[test]
fn a_body_sent_a_byte_at_a_time_is_timed_out() {
    let s = TestServer::start("[limits]\ndata_timeout = 2\n");
    let mut c = Raw::to_alice(s.addr("mta"), "slow.test");
    assert_eq!(code(&c.cmd("DATA")), 354);
    let stream = c.into_stream();
    dribble(stream.try_clone().expect("clone"), b"slow body\r\n");
    let (said, took) = until_closed(stream);
    assert!(said.starts_with("421 4.4.2"), "{said}");
    assert!(took < Duration::from_secs(6), "held for {took:?}");
    assert!(s.queue().is_empty());
}

#[test]
fn five_thousand_connections_at_once_get_421_beyond_the_cap_and_the_server_recovers() {
    // This process holds 5,000 sockets and the server (which inherits the
    // limit) as many: a default soft limit of 1,024 would not do.
    raise_open_file_limit(12_000);
    let s = TestServer::start("[limits]\nmax_connections = 1000\nmax_connections_per_ip = 10000\n");
    let addr = s.addr("mta");
    let mut open = Vec::with_capacity(5000);
    for _ in 0..5000 {
        open.push(TcpStream::connect(addr).expect("connect"));
    }
    let (mut greeted, mut refused) = (0, 0);
    for stream in &open {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        match code(&line) {
            220 => greeted += 1,
            421 => refused += 1,
            _ => panic!("unexpected greeting {line:?}"),
        }
    }
    assert_eq!((greeted, refused), (1000, 4000));
    drop(open);
    // Served normally once the flood is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !greeting(addr).starts_with("220 ") {
        assert!(Instant::now() < deadline, "no recovery after the flood");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = swaks(
        addr,
        &["--from", "a@remote.example", "--to", "alice@example.com"],
    );
    assert!(text(&out).contains("queued as"), "{}", text(&out));
}

#[test]
fn a_body_sent_one_octet_per_bdat_is_timed_out() {
    let s = TestServer::start("[limits]\ndata_timeout = 2\n");
    let mut c = Raw::to_alice(s.addr("mta"), "slow.test");
    let start = Instant::now();
    let mut said = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        c.send(b"BDAT 1\r\nx");
        said = c.reply();
        if !said.starts_with("250 ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(said.starts_with("421 4.4.2"), "{said}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "held for {:?}",
        start.elapsed()
    );
}

#[test]
fn a_client_that_only_sends_noop_is_cut_off() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO idle.test");
    // A hundred commands that move no mail are free (Postfix's
    // smtpd_junk_command_limit); the real work still goes through.
    for _ in 0..100 {
        assert_eq!(code(&c.cmd("NOOP")), 250);
    }
    assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>")), 250);
    assert_eq!(code(&c.cmd("RSET")), 250);
    // Past them, each is an error: the tenth error ends the session.
    for _ in 0..8 {
        assert_eq!(code(&c.cmd("NOOP")), 250);
    }
    let last = c.cmd("NOOP");
    assert!(last.starts_with("421 "), "{last}");
    assert!(c.closed());
}
