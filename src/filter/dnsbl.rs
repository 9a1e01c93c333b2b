//! DNS block lists (RFC 5782): a client of an mta listener listed in one of
//! `[filter] dnsbl` is turned away at connect, before it can send anything.

use std::net::{IpAddr, Ipv4Addr};

use hickory_resolver::proto::rr::RecordType;

use crate::dns::Dns;

/// The name that asks `zone` about `ip`: the address's octets (IPv4) or
/// nibbles (IPv6) in reverse order, then the zone.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let reversed = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .rev()
            .flat_map(|byte| [byte & 0x0f, byte >> 4])
            .map(|nibble| format!("{nibble:x}"))
            .collect::<Vec<_>>()
            .join("."),
    };
    format!("{reversed}.{zone}")
}

/// The first of `zones` that lists `ip`. An answer in 127.0.0.0/8 lists it
/// (RFC 5782 §2.1); 127.255.255.0/24 is how lists such as Spamhaus say that
/// they refused the query, not that the address is listed. A list that does
/// not answer lists no one: a block list must not stop mail by being down.
pub async fn listed_in(dns: &Dns, zones: &[String], ip: IpAddr) -> Option<String> {
    for zone in zones {
        let answers = dns
            .lookup_values(&query_name(ip, zone), RecordType::A)
            .await
            .unwrap_or_default();
        let listed = answers
            .iter()
            .filter_map(|a| a.parse::<Ipv4Addr>().ok())
            .any(|a| a.octets()[0] == 127 && a.octets()[..3] != [127, 255, 255]);
        if listed {
            return Some(zone.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(
            query_name("192.0.2.99".parse().expect("ip"), "zen.example"),
            "99.2.0.192.zen.example"
        );
        assert_eq!(
            query_name("2001:db8::1".parse().expect("ip"), "bl.example"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
        );
    }
}
