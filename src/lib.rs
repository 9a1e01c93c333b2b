//! Postern: a mail server for hosts whose users sit behind ISPs that block port 25.
//!
//! # Layout
//! The path of one message, and the module that owns each step:
//!
//! - `listener`: binds every `[[listener]]`, caps connections, spawns a session.
//! - `session`: the SMTP state machine (the only code that talks to a client);
//!   `tls` for STARTTLS/465, `auth` for AUTH, `policy` for every accept/refuse.
//! - `smtp`: wire types with no I/O: replies, addresses, the DATA/BDAT reader,
//!   and the reader of a message's header section.
//! - `prepare`: the one place an accepted transaction becomes a queued
//!   message: checks the header section once (hop count, and sender headers
//!   by `policy`), checks who sent mail from other servers (`dmarc`),
//!   makes submitted text 7-bit, expands aliases (SRS for forwards), adds Received:,
//!   and Date and Message-ID for submitted mail, and signs it (`dkim`).
//! - `spool`: storage only, behind the `Storage` trait: makes the message
//!   durable (group commit) before the 250, takes large bodies to disk while
//!   they arrive, keeps the free-space floor, answers what is due.
//! - `scheduler`: decides when: owns the active queue (claims, the hand-off of
//!   new mail, wake-ups) and what it knows of each destination (concurrency,
//!   down), retries with backoff, applies outcomes and queues DSNs (`dsn`).
//! - `router`: decides where: local mailbox, a route, the relay, or MX (with the
//!   port-25 fallback), and gathers the facts it decides on.
//! - `outbound`: the SMTP client to other servers (`dns` for MX and addresses);
//!   `local`: delivery to hosted mailboxes (Maildir, or LMTP to Dovecot); `failure`: what a failed
//!   delivery means (severity, kind), stored with the outcome and explained
//!   by the DSN and `postern queue show`.
//! - `store`: accounts, hosted domains and aliases; `dkim`: per-domain keys,
//!   the signatures of submitted mail and their rotation; `dmarc`: SPF, DKIM
//!   and DMARC checks of mail from other servers; `filter`: the spam filter
//!   (rspamd).
//! - `watch`: what each user sends: the sending limits, and the hold on an
//!   account whose last hour is a burst against its own history.
//! - `server`: wires the above together and drains on SIGTERM; `context`
//!   holds what it hands every connection; `control` is the local socket
//!   through which `postern queue` changes the queue of the running server;
//!   `sendmail` the local socket through which programs submit mail as
//!   their Unix user (`postern sendmail`), queued as the session queues.
//! - `http`: client autoconfiguration, MTA-STS, metrics, SMTP on the HTTPS port;
//!   `acme`: its certificate (and every listener's) from an ACME CA.
//! - `check`: the port-block diagnostic run from a user's network (`postern check`),
//!   and the way out through the user's ISP when every port is blocked;
//!   `portecho`: the server's half of its interception test; `portmap`: which
//!   submission ports work from which client networks (autoconfig lists
//!   those first).
//! - `cli`: the command line of DESIGN.md (with the DNS records `postern dns`
//!   prints); `config`: the validated configuration.
//!
//! See docs/flow.md for the path of a message in prose.
//!
//! # Layers
//! Each module imports only from lower ones (tests/layering.rs keeps it so):
//!
//! 1. `clock`, `sqlite`, `private_file`, `smtp`, `dns`, `dkim`, `portecho`, `telemetry`,
//!    `failure`: leaves.
//! 2. `config`, `store`, `spool`, `policy`.
//! 3. `auth`, `tls`, `dsn`, `router`, `dmarc`, `filter`, `local`, `prometheus`,
//!    `portmap`.
//! 4. `outbound`, `acme`, `check`; 5. `scheduler`.
//! 6. `control`, `watch`, then `context` (`ServerContext`, what connections share).
//! 7. `prepare`; 8. `session`; 9. `listener`, `sendmail`; 10. `http`;
//! 11. `server`; 12. `cli`.

pub mod acme;
pub mod auth;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod control;
pub mod dashboard;
pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod dsn;
pub mod failure;
pub mod filter;
pub mod flow;
pub mod http;
pub mod listener;
pub mod local;
pub mod outbound;
pub mod policy;
pub mod portecho;
pub mod portmap;
pub mod prepare;
pub mod private_file;
pub mod prometheus;
pub mod router;
pub mod scheduler;
pub mod sendmail;
pub mod server;
pub mod session;
pub mod smtp;
pub mod spool;
pub mod sqlite;
pub mod srs;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod watch;
