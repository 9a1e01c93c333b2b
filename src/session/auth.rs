//! AUTH PLAIN and LOGIN (RFC 4954): only over TLS, once per session, slowed
//! after each failure and cut after `auth_failures_per_connection`.

use std::time::Duration;

use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::io::{Line, SessionEnd};
use super::{Flow, MAX_AUTH_LINE, Session};
use crate::auth::AuthOutcome;
use crate::auth::sasl::{self, Credentials, SaslError};
use crate::smtp::reply::Reply;

impl Session {
    pub(super) async fn auth(
        &mut self,
        mechanism: u64,
        initial: String,
    ) -> Result<Flow, SessionEnd> {
        if self.tls.is_none() {
            return Ok(self.reply(Reply::new(
                538,
                (7, 11),
                "Encryption required for requested authentication mechanism",
            )));
        }
        if self.greeting.is_none() {
            return Ok(self.reply(Reply::bad_sequence("Error: send EHLO first")));
        }
        if self.identity.is_some() {
            return Ok(self.reply(Reply::bad_sequence("Error: already authenticated")));
        }
        if self.tx.is_some() {
            return Ok(self.reply(Reply::bad_sequence(
                "Error: AUTH not allowed during a mail transaction",
            )));
        }
        let credentials = match mechanism {
            AUTH_PLAIN => self.sasl_plain(initial).await?,
            AUTH_LOGIN => self.sasl_login(initial).await?,
            _ => {
                return Ok(self.reply(Reply::new(504, (5, 4), "Unrecognized authentication type")));
            }
        };
        let credentials = match credentials {
            Ok(c) => c,
            Err(SaslError::Cancelled) => {
                return Ok(self.reply(Reply::new(501, (7, 0), "Authentication aborted")));
            }
            Err(e) => {
                return Ok(self
                    .auth_failed(Reply::new(501, (5, 2), e.to_string()))
                    .await);
            }
        };
        let outcome = match self
            .ctx
            .auth
            .verify(self.peer.ip(), &credentials.username, &credentials.password)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(event = "auth_error", error = %e);
                return Ok(self.reply(Reply::new(454, (7, 0), "Temporary authentication failure")));
            }
        };
        match outcome {
            AuthOutcome::Success(user) => {
                tracing::info!(event = "auth_ok", user = %user);
                metrics::counter!("postern_auth_successes_total", "port" => self.local.port().to_string()).increment(1);
                if self.role != crate::config::ListenerRole::Mta {
                    self.ctx
                        .portmap
                        .authenticated(self.peer.ip(), self.local.port());
                }
                self.ctx.portmap.logged_in(&user, self.local.port());
                self.identity = Some(user);
                self.logged_in_at = crate::clock::now_unix();
                Ok(self.reply(Reply::new(235, (7, 0), "Authentication successful")))
            }
            AuthOutcome::Failure => {
                tracing::info!(event = "auth_failed", user = %credentials.username);
                metrics::counter!("postern_auth_failures_total", "port" => self.local.port().to_string()).increment(1);
                Ok(self
                    .auth_failed(Reply::new(
                        535,
                        (7, 8),
                        "Authentication credentials invalid",
                    ))
                    .await)
            }
            AuthOutcome::Throttled => {
                tracing::info!(event = "auth_failed", user = %credentials.username, throttled = true);
                self.conn.queue(&Reply::new(
                    421,
                    (7, 0),
                    "Too many failed authentication attempts from your address; try later",
                ));
                Ok(Flow::Close)
            }
        }
    }

    /// A failed attempt: wait longer after each one, then end the session when
    /// the per-connection allowance is used up.
    async fn auth_failed(&mut self, reply: Reply) -> Flow {
        self.auth_failures += 1;
        tokio::time::sleep(Duration::from_millis(500) * self.auth_failures).await;
        if self.auth_failures >= self.config.limits.auth_failures_per_connection {
            self.conn.queue(&reply);
            self.conn.queue(&Reply::new(
                421,
                (7, 0),
                "Too many failed authentication attempts",
            ));
            return Flow::Close;
        }
        self.reply(reply)
    }

    /// Sends a 334 challenge and reads the client's base64 answer.
    async fn challenge(&mut self, prompt: &str) -> Result<Result<Vec<u8>, SaslError>, SessionEnd> {
        self.conn.queue(&Reply::plain(334, prompt));
        let timeout = self.config.limits.command_timeout;
        match self.conn.read_line(MAX_AUTH_LINE, timeout, None).await? {
            Line::Complete(line) => Ok(sasl::decode_line(&String::from_utf8_lossy(&line))),
            Line::TooLong => Ok(Err(SaslError::Malformed)),
        }
    }

    async fn sasl_plain(
        &mut self,
        initial: String,
    ) -> Result<Result<Credentials, SaslError>, SessionEnd> {
        let decoded = if initial.is_empty() {
            self.challenge("").await?
        } else {
            sasl::decode_line(&initial)
        };
        Ok(decoded.and_then(|d| sasl::plain(&d)))
    }

    async fn sasl_login(
        &mut self,
        initial: String,
    ) -> Result<Result<Credentials, SaslError>, SessionEnd> {
        let username = if initial.is_empty() {
            self.challenge(sasl::LOGIN_USERNAME_PROMPT).await?
        } else {
            sasl::decode_line(&initial)
        };
        let username = match username.and_then(|u| sasl::login_field(&u)) {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        let password = self.challenge(sasl::LOGIN_PASSWORD_PROMPT).await?;
        Ok(password
            .and_then(|p| sasl::login_field(&p))
            .map(|password| Credentials { username, password }))
    }
}
