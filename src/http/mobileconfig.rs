//! An Apple configuration profile (unsigned .mobileconfig) that sets up the
//! account on iOS and macOS. A profile holds one outgoing server: the first in
//! order of preference.

use super::endpoints::SubmissionEndpoint;
use super::xml_escape;

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub fn render(
    address: &str,
    hostname: &str,
    imap: (&str, u16),
    outgoing: SubmissionEndpoint,
) -> String {
    let id_base = format!("net.postern.{}", address.replace(['@', '+'], "."));
    let (address, hostname, imap_host) = (
        xml_escape(address),
        xml_escape(hostname),
        xml_escape(imap.0),
    );
    let id_base = xml_escape(&id_base);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key><string>{address}</string>
      <key>EmailAccountType</key><string>EmailTypeIMAP</string>
      <key>EmailAddress</key><string>{address}</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>{imap_host}</string>
      <key>IncomingMailServerPortNumber</key><integer>{imap_port}</integer>
      <key>IncomingMailServerUseSSL</key><true/>
      <key>IncomingMailServerUsername</key><string>{address}</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>{hostname}</string>
      <key>OutgoingMailServerPortNumber</key><integer>{port}</integer>
      <key>OutgoingMailServerUseSSL</key><true/>
      <key>OutgoingMailServerUsername</key><string>{address}</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadDescription</key><string>Mail account {address}</string>
      <key>PayloadDisplayName</key><string>{address}</string>
      <key>PayloadIdentifier</key><string>{id_base}.account</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>{uuid1}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>Mail for {address}</string>
  <key>PayloadIdentifier</key><string>{id_base}</string>
  <key>PayloadRemovalDisallowed</key><false/>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{uuid2}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
        imap_port = imap.1,
        port = outgoing.port,
        uuid1 = uuid(),
        uuid2 = uuid(),
    )
}
