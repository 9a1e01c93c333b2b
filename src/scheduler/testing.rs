//! Queued messages for the scheduler's unit tests.

use crate::spool::{DsnEnvelope, QueueId, QueuedMessage, QueuedRecipient, RecipientStatus};

/// A message from `sender` accepted at `created` (Unix seconds), its
/// recipients due then, with no attempt made yet.
pub fn message(sender: &str, created: i64, recipients: &[&str]) -> QueuedMessage {
    QueuedMessage {
        id: QueueId::generate(),
        created,
        sender: sender.into(),
        size: 10,
        auth_user: None,
        smtputf8: false,
        requiretls: false,
        tls_policy_waived: false,
        dsn: DsnEnvelope::default(),
        recipients: recipients
            .iter()
            .enumerate()
            .map(|(idx, address)| QueuedRecipient {
                idx: idx as u32,
                address: address.to_string(),
                orcpt: None,
                notify: None,
                status: RecipientStatus::Queued,
                attempts: 0,
                next_attempt: created,
                last_reply: None,
                last_kind: None,
                held: false,
            })
            .collect(),
    }
}

/// Where a gated storage call waits: it notifies `entered` on arrival and
/// goes on once `open` is notified (a permit given beforehand lets it
/// through at once).
#[derive(Default)]
pub struct Gate {
    pub entered: tokio::sync::Notify,
    pub open: tokio::sync::Notify,
}

impl Gate {
    async fn pass(&self) {
        self.entered.notify_one();
        self.open.notified().await;
    }
}

/// A spool whose chosen calls wait at gates, so that a test can act between
/// the steps of a claim pass or a delivery round.
pub struct Gated {
    pub inner: crate::spool::Spool,
    /// `due`: waits before reading, or after with `due_read_first`.
    pub due: Option<std::sync::Arc<Gate>>,
    pub due_read_first: bool,
    pub record: Option<std::sync::Arc<Gate>>,
    /// `retry_kind` of one message (not of the whole queue).
    pub retry_one: Option<std::sync::Arc<Gate>>,
}

impl Gated {
    /// `inner`, with no gate yet.
    pub fn over(inner: &crate::spool::Spool) -> Gated {
        Gated {
            inner: inner.clone(),
            due: None,
            due_read_first: false,
            record: None,
            retry_one: None,
        }
    }
}

async fn pass(gate: Option<&std::sync::Arc<Gate>>) {
    if let Some(gate) = gate {
        gate.pass().await;
    }
}

#[async_trait::async_trait]
impl crate::spool::Storage for Gated {
    async fn spill(&self) -> std::io::Result<crate::spool::SpillFile> {
        self.inner.spill().await
    }
    async fn put(
        &self,
        id: QueueId,
        m: crate::spool::NewMessage,
        s: Option<crate::spool::SpillFile>,
    ) -> Result<QueuedMessage, crate::spool::SpoolError> {
        self.inner.put(id, m, s).await
    }
    async fn due(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, crate::spool::SpoolError> {
        if self.due_read_first {
            let rows = self.inner.due(now, limit).await;
            pass(self.due.as_ref()).await;
            return rows;
        }
        pass(self.due.as_ref()).await;
        self.inner.due(now, limit).await
    }
    async fn next_due(&self, now: i64) -> Result<Option<i64>, crate::spool::SpoolError> {
        self.inner.next_due(now).await
    }
    async fn record(
        &self,
        id: &QueueId,
        u: Vec<crate::spool::RecipientUpdate>,
        b: Option<(QueueId, crate::spool::NewMessage)>,
    ) -> Result<(), crate::spool::SpoolError> {
        pass(self.record.as_ref()).await;
        self.inner.record(id, u, b).await
    }
    async fn body(&self, id: &QueueId) -> Result<Option<Vec<u8>>, crate::spool::SpoolError> {
        self.inner.body(id).await
    }
    async fn list(
        &self,
        filter: &crate::spool::ListFilter,
        after: Option<&QueueId>,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, crate::spool::SpoolError> {
        self.inner.list(filter, after, limit).await
    }
    async fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, crate::spool::SpoolError> {
        self.inner.get(id).await
    }
    async fn summary(&self) -> Result<crate::spool::Summary, crate::spool::SpoolError> {
        self.inner.summary().await
    }
    async fn stuck(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::spool::StuckGroup>, crate::spool::SpoolError> {
        self.inner.stuck(limit).await
    }
    async fn delete(&self, id: &QueueId) -> Result<bool, crate::spool::SpoolError> {
        self.inner.delete(id).await
    }
    async fn retry(&self, id: Option<&QueueId>) -> Result<u64, crate::spool::SpoolError> {
        self.inner.retry(id).await
    }
    async fn retry_kind(
        &self,
        kind: &str,
        id: Option<&QueueId>,
    ) -> Result<u64, crate::spool::SpoolError> {
        if id.is_some() {
            pass(self.retry_one.as_ref()).await;
        }
        self.inner.retry_kind(kind, id).await
    }
    async fn hold(&self, id: &QueueId) -> Result<u64, crate::spool::SpoolError> {
        self.inner.hold(id).await
    }
    async fn release_held(&self, id: &QueueId) -> Result<u64, crate::spool::SpoolError> {
        self.inner.release_held(id).await
    }
}
