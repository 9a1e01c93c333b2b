//! Thunderbird's autoconfig (config-v1.1.xml): the incoming IMAP server and
//! every submission port, in order of preference, with its real number.

use super::endpoints::SubmissionEndpoint;
use super::xml_escape;

pub fn render(
    domain: &str,
    hostname: &str,
    imap: (&str, u16),
    endpoints: &[SubmissionEndpoint],
) -> String {
    let (domain, hostname) = (xml_escape(domain), xml_escape(hostname));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{domain}\">\n    \
         <domain>{domain}</domain>\n    <displayName>{domain} mail</displayName>\n    <displayShortName>{domain}</displayShortName>\n    \
         <incomingServer type=\"imap\">\n      <hostname>{}</hostname>\n      <port>{}</port>\n      <socketType>SSL</socketType>\n      \
         <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </incomingServer>\n",
        xml_escape(imap.0),
        imap.1
    );
    for e in endpoints {
        out.push_str(&format!(
            "    <outgoingServer type=\"smtp\">\n      <hostname>{hostname}</hostname>\n      <port>{}</port>\n      \
             <socketType>{}</socketType>\n      <authentication>password-cleartext</authentication>\n      \
             <username>%EMAILADDRESS%</username>\n    </outgoingServer>\n",
            e.port,
            if e.implicit_tls { "SSL" } else { "STARTTLS" }
        ));
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}
