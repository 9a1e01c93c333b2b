//! A real DNS server on a loopback UDP port, answering from a zone the test
//! edits while it runs: MX, A, AAAA, TXT, SRV, CNAME, PTR, null MX; names it does not know get
//! NXDOMAIN. Answers have a TTL of one second unless the test sets another; the
//! server counts the questions it gets per name. Postern reaches it through
//! `[delivery] nameservers`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SRV, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

type Zone = HashMap<String, Vec<RData>>;

pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    ttl: Arc<AtomicU32>,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_lowercase()
}

impl TestDns {
    pub fn start() -> TestDns {
        TestDns::serve(UdpSocket::bind("127.0.0.1:0").expect("bind dns"))
    }

    /// A server on 127.0.0.1:53 inside network namespace `ns`, for programs
    /// that ask only the resolver /etc/resolv.conf names (see
    /// `netlab::Netns::resolving_locally`).
    pub fn start_in_netns(ns: &str) -> TestDns {
        use std::os::fd::AsFd;
        let path = format!("/run/netns/{ns}");
        // The socket stays in the namespace it was made in; the thread that
        // entered the namespace to make it ends here.
        let socket = thread::spawn(move || {
            let namespace = std::fs::File::open(&path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                namespace.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            UdpSocket::bind("127.0.0.1:53").expect("bind dns in the namespace")
        })
        .join()
        .expect("bind thread");
        TestDns::serve(socket)
    }

    fn serve(socket: UdpSocket) -> TestDns {
        let addr = socket.local_addr().expect("addr");
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let ttl = Arc::new(AtomicU32::new(1));
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (served, ttl_served, counted) =
            (Arc::clone(&zone), Arc::clone(&ttl), Arc::clone(&asked));
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let ttl = ttl_served.load(Ordering::Relaxed);
                if let Some(reply) = answer(&served, &counted, ttl, &buf[..n]) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        TestDns {
            addr,
            zone,
            ttl,
            asked,
        }
    }

    /// The TTL of the answers from now on, in seconds.
    pub fn set_ttl(&self, seconds: u32) {
        self.ttl.store(seconds, Ordering::Relaxed);
    }

    /// How many questions about `name` (of any type) the server got.
    pub fn asked(&self, name: &str) -> usize {
        self.asked
            .lock()
            .expect("counts")
            .get(&key(name))
            .copied()
            .unwrap_or(0)
    }

    fn add(&self, name: &str, data: RData) {
        self.zone
            .lock()
            .expect("zone")
            .entry(key(name))
            .or_default()
            .push(data);
    }

    /// Removes every record of `name`.
    pub fn remove(&self, name: &str) {
        self.zone.lock().expect("zone").remove(&key(name));
    }

    pub fn mx(&self, domain: &str, preference: u16, host: &str) {
        self.add(
            domain,
            RData::MX(MX::new(
                preference,
                Name::from_ascii(format!("{host}.")).expect("name"),
            )),
        );
    }

    /// RFC 7505: one MX of preference 0 pointing at the root.
    pub fn null_mx(&self, domain: &str) {
        self.add(domain, RData::MX(MX::new(0, Name::root())));
    }

    pub fn ip(&self, host: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(host, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(host, RData::AAAA(AAAA(v6))),
        }
    }

    /// A TXT record; each string is one character-string of the record.
    pub fn txt(&self, name: &str, strings: &[&str]) {
        self.add(
            name,
            RData::TXT(TXT::new(strings.iter().map(ToString::to_string).collect())),
        );
    }

    /// A TXT record of one value longer than a character-string may be
    /// (a DKIM key), split into strings of 255 octets as zone files do.
    pub fn txt_long(&self, name: &str, value: &str) {
        let strings: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let strings: Vec<&str> = strings.iter().map(String::as_str).collect();
        self.txt(name, &strings);
    }

    pub fn srv(&self, name: &str, priority: u16, port: u16, target: &str) {
        self.add(
            name,
            RData::SRV(SRV::new(
                priority,
                1,
                port,
                Name::from_ascii(format!("{target}.")).expect("name"),
            )),
        );
    }

    /// The reverse record of `ip` (in-addr.arpa or ip6.arpa).
    pub fn ptr(&self, ip: IpAddr, host: &str) {
        let name = Name::from(ip).to_ascii();
        self.add(
            &name,
            RData::PTR(PTR(Name::from_ascii(format!("{host}.")).expect("name"))),
        );
    }

    pub fn cname(&self, name: &str, target: &str) {
        self.add(
            name,
            RData::CNAME(CNAME(Name::from_ascii(format!("{target}.")).expect("name"))),
        );
    }

    /// The `[delivery]` lines that point Postern at this server.
    pub fn config(&self) -> String {
        format!("nameservers = [\"{}\"]\n", self.addr)
    }
}

fn answer(
    zone: &Mutex<Zone>,
    asked: &Mutex<HashMap<String, usize>>,
    ttl: u32,
    packet: &[u8],
) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?.clone();
    *asked
        .lock()
        .ok()?
        .entry(key(&query.name().to_ascii()))
        .or_default() += 1;
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    let zone = zone.lock().ok()?;
    match zone.get(&key(&query.name().to_ascii())) {
        None => response.metadata.response_code = ResponseCode::NXDomain,
        Some(records) => {
            let wanted = query.query_type();
            for data in records
                .iter()
                .filter(|d| d.record_type() == wanted || wanted == RecordType::ANY)
            {
                response.add_answer(Record::from_rdata(query.name().clone(), ttl, data.clone()));
            }
        }
    }
    response.to_vec().ok()
}
