//! The servers of one destination in the order they are tried (a relay's
//! addresses, or each MX host's addresses by preference, a host looked up
//! only once those before it are used up), and what trying them showed: the
//! failure reported when none of them took the message.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::client::ConnectFailure;
use super::dane::Dane;
use crate::dns::{Dns, TlsaAnswer};
use crate::failure::{DeliveryFailure, FailureKind, Severity};

/// Whose servers they are.
#[derive(Debug)]
enum Owner {
    /// A domain's MX hosts (or the domain itself, RFC 5321 §5.1).
    Mx(String),
    /// A smarthost, by its configured name.
    Relay(String),
}

/// One server to try: the host name (for TLS and messages) and an address,
/// and what its TLSA records ask, when DANE applies.
#[derive(Clone)]
pub struct Server {
    pub host: String,
    pub addr: SocketAddr,
    pub dane: Option<Dane>,
}

pub struct Servers {
    owner: Owner,
    port: u16,
    /// Whether the hosts' TLSA records are asked (the MX records are
    /// signed, and DANE is on).
    dane: bool,
    /// The host being tried's DANE requirement.
    host_dane: Option<Dane>,
    /// Hosts not looked up yet.
    hosts: VecDeque<String>,
    /// The host being tried and its addresses not tried yet.
    host: String,
    addrs: VecDeque<IpAddr>,
    /// Whether any server answered (as opposed to every connection being
    /// refused or timing out), whether any was tried at all, and whether a
    /// host was passed over because its TLSA records could not be settled.
    answered: bool,
    tried: bool,
    passed_over: bool,
    /// Hosts passed over since last asked, and why, for TLS reports.
    newly_passed_over: Vec<(String, String)>,
    last: Option<DeliveryFailure>,
}

impl Servers {
    /// `domain`'s MX `hosts`, in order, on `port`.
    pub fn mx(domain: &str, hosts: Vec<String>, port: u16) -> Servers {
        Servers::new(Owner::Mx(domain.to_string()), hosts, port)
    }

    /// The relay `host` on `port`.
    pub fn relay(host: &str, port: u16) -> Servers {
        Servers::new(Owner::Relay(host.to_string()), vec![host.to_string()], port)
    }

    fn new(owner: Owner, hosts: Vec<String>, port: u16) -> Servers {
        Servers {
            owner,
            port,
            dane: false,
            host_dane: None,
            hosts: hosts.into(),
            host: String::new(),
            addrs: VecDeque::new(),
            answered: false,
            tried: false,
            passed_over: false,
            newly_passed_over: Vec::new(),
            last: None,
        }
    }

    /// Asks each host's TLSA records before its addresses are tried.
    pub fn with_dane(mut self, dane: bool) -> Servers {
        self.dane = dane;
        self
    }

    /// The domain, when these are its MX hosts: port-25 detection counts
    /// connections to them.
    pub fn mx_domain(&self) -> Option<&str> {
        match &self.owner {
            Owner::Mx(domain) => Some(domain),
            Owner::Relay(_) => None,
        }
    }

    /// The next server to try; `None` once all are used up. A host whose
    /// addresses cannot be looked up is skipped, and remembered as the
    /// failure so far.
    pub async fn next(&mut self, dns: &Dns) -> Option<Server> {
        loop {
            if let Some(ip) = self.addrs.pop_front() {
                return Some(Server {
                    host: self.host.clone(),
                    addr: SocketAddr::new(ip, self.port),
                    dane: self.host_dane.clone(),
                });
            }
            let host = self.hosts.pop_front()?;
            self.host_dane = None;
            if self.dane {
                match dns.tlsa(&host, self.port).await {
                    TlsaAnswer::None => {}
                    TlsaAnswer::Records(records) => match Dane::of(records) {
                        Ok(dane) => self.host_dane = Some(dane),
                        Err(e) => {
                            self.last = Some(DeliveryFailure::local(format!(
                                "cannot set up DANE for {host}: {e}"
                            )));
                            continue;
                        }
                    },
                    TlsaAnswer::Unusable(why) => {
                        tracing::warn!(event = "dane_unusable", host = %host, "{why}");
                        self.passed_over = true;
                        self.last = Some(DeliveryFailure::new(
                            Severity::Transient,
                            FailureKind::Tls,
                            format!("{host}: not tried: {why}"),
                        ));
                        self.newly_passed_over.push((host, why));
                        continue;
                    }
                }
            }
            match dns.addresses(&host).await {
                Ok(addrs) => {
                    self.addrs = addrs.into();
                    self.host = host;
                }
                Err(e) => {
                    self.last = Some(DeliveryFailure::new(
                        Severity::Transient,
                        FailureKind::Dns,
                        e.to_string(),
                    ))
                }
            }
        }
    }

    /// The hosts `next` passed over since the last call, because their TLSA
    /// records could not be settled, and why.
    pub fn take_passed_over(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.newly_passed_over)
    }

    /// `server` could not be used; the next one is tried.
    pub fn failed(&mut self, server: &Server, failure: ConnectFailure) {
        self.tried = true;
        self.answered |= !failure.tcp_failed;
        tracing::info!(event = "host_failed", host = %server.host, addr = %server.addr, reason = %failure.failure);
        self.last = Some(failure.failure);
    }

    /// Why no server took the message: a relay's last failure as it was; for
    /// a domain, whether its servers answered and refused, or could not be
    /// reached on the port at all (perhaps blocked), which the DSN says.
    pub fn failure(self) -> DeliveryFailure {
        let Servers {
            owner,
            port,
            answered,
            tried,
            passed_over,
            last,
            ..
        } = self;
        let domain = match owner {
            Owner::Relay(host) => {
                return last.unwrap_or_else(|| {
                    DeliveryFailure::new(
                        Severity::Transient,
                        FailureKind::Dns,
                        format!("the relay {host} has no address"),
                    )
                });
            }
            Owner::Mx(domain) => domain,
        };
        let kind = match &last {
            Some(f) if answered => f.kind,
            _ if tried => FailureKind::Unreachable { port },
            _ if passed_over => FailureKind::Tls,
            _ => FailureKind::Dns,
        };
        let last = last
            .map(|f| f.text)
            .unwrap_or_else(|| "no address found".into());
        let text = if answered {
            format!("no server of {domain} took the message on port {port} (last error: {last})")
        } else if tried {
            format!("no server of {domain} could be reached on port {port} (last error: {last})")
        } else {
            format!("no server of {domain} could be used (last error: {last})")
        };
        DeliveryFailure::new(Severity::Transient, kind, text)
    }
}
