//! Postern: a mail server for hosts whose users sit behind ISPs that block port 25.
//!
//! # Layout
//! The path of one message, and the module that owns each step:
//!
//! - `listener`: binds every `[[listener]]`, caps connections, spawns a session.
//! - `session`: the SMTP state machine (the only code that talks to a client);
//!   `tls` for STARTTLS/465, `auth` for AUTH, `policy` for every accept/refuse.
//! - `smtp`: wire types with no I/O: replies, addresses, the DATA/BDAT reader.
//! - `prepare`: Received:, and Date/Message-ID for submitted mail.
//! - `spool`: makes the message durable (group commit) before the 250.
//! - `store`: accounts and hosted domains; `dkim`: per-domain keys.
//! - `server`: wires the above together and drains on SIGTERM.
//! - `cli`: the command line of DESIGN.md; `config`: the validated configuration.
//!
//! Delivery (scheduler, router, outbound) comes next; see docs/flow.md.

pub mod auth;
pub mod cli;
pub mod config;
pub mod dkim;
pub mod listener;
pub mod policy;
pub mod prepare;
pub mod server;
pub mod session;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod tls;
