//! `ListenerRole`: what a listening port is for, and the protocol rules that follow
//! from it (DESIGN.md "Roles of a listener").

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerRole {
    /// Port 25: mail from other servers for hosted domains.
    Mta,
    /// Ports 26 and 587 (RFC 6409): clients, STARTTLS then AUTH.
    Submission,
    /// Port 465 (RFC 8314): TLS from the first byte, then as submission.
    Submissions,
}

impl ListenerRole {
    /// MAIL is refused (530) until the client has authenticated.
    pub fn auth_required_for_mail(self) -> bool {
        self != ListenerRole::Mta
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerRole::Mta => "mta",
            ListenerRole::Submission => "submission",
            ListenerRole::Submissions => "submissions",
        }
    }
}

impl fmt::Display for ListenerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListenerRole {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "mta" => Ok(ListenerRole::Mta),
            "submission" => Ok(ListenerRole::Submission),
            "submissions" => Ok(ListenerRole::Submissions),
            _ => Err(()),
        }
    }
}

impl serde::Serialize for ListenerRole {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
