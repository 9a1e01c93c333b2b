//! Microsoft Autodiscover, plain-old-XML flavour (the one Outlook and many other
//! clients use for IMAP/SMTP accounts): the request names the address; the
//! reply lists the IMAP server and every submission port.

use super::endpoints::SubmissionEndpoint;
use super::xml_escape;

/// The `<EMailAddress>` of a request body. The request is one small, fixed
/// document; a substring search is enough and cannot be led astray by markup,
/// since the result is validated as an address afterwards.
pub fn requested_address(body: &str) -> Option<String> {
    let start = body.find("<EMailAddress>")? + "<EMailAddress>".len();
    let end = start + body[start..].find("</EMailAddress>")?;
    Some(body[start..end].trim().to_string())
}

pub fn render(
    address: &str,
    hostname: &str,
    imap: (&str, u16),
    endpoints: &[SubmissionEndpoint],
) -> String {
    let (address, hostname) = (xml_escape(address), xml_escape(hostname));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  \
         <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <Account>\n      \
         <AccountType>email</AccountType>\n      <Action>settings</Action>\n      <Protocol>\n        <Type>IMAP</Type>\n        \
         <Server>{}</Server>\n        <Port>{}</Port>\n        <SSL>on</SSL>\n        <SPA>off</SPA>\n        <AuthRequired>on</AuthRequired>\n        \
         <LoginName>{address}</LoginName>\n      </Protocol>\n",
        xml_escape(imap.0),
        imap.1
    );
    for e in endpoints {
        let security = if e.implicit_tls {
            "<SSL>on</SSL>"
        } else {
            "<SSL>on</SSL>\n        <Encryption>TLS</Encryption>"
        };
        out.push_str(&format!(
            "      <Protocol>\n        <Type>SMTP</Type>\n        <Server>{hostname}</Server>\n        <Port>{}</Port>\n        {security}\n        \
             <SPA>off</SPA>\n        <AuthRequired>on</AuthRequired>\n        <LoginName>{address}</LoginName>\n      </Protocol>\n",
            e.port
        ));
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}
