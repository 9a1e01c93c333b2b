//! The one integration test binary: every module starts the real `postern`
//! binary on loopback ports and talks to it with outside clients.

// Test support code panics on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod acme;
mod arc;
mod auth;
mod autoconfig;
mod bounces;
mod check;
mod cli;
mod dane;
mod dashboard;
mod dashboard_browser;
mod delivery;
mod destinations;
mod dkim;
mod dmarc;
mod dmarc_reports;
mod dns_records;
mod dnsbl;
mod dovecot;
mod dual_stack;
mod durability;
mod eight_bit;
mod envelope;
mod faults;
mod forwarding;
mod fuzz_regressions;
mod headers;
mod http_limits;
mod idle_connections;
mod large_bodies;
mod layering;
mod log_injection;
mod logins;
mod long_lines;
mod metrics;
mod mta_inbound;
mod mta_sts;
mod outbound_tls;
mod permissions;
mod privileges;
mod protocol;
mod queue_control;
mod queue_id_logs;
mod reload;
mod requiretls;
mod rspamd;
mod sender_watch;
mod sending_limits;
mod sendmail;
mod service;
mod smuggling;
mod starttls;
mod submission;
