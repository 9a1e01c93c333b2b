//! `Storage::list`: pages by id, its filters and its limit, and the query
//! plans that keep a page's cost independent of the queue's size.

use super::*;

fn to(addresses: &[&str]) -> NewMessage {
    let mut m = message(0);
    m.recipients = addresses
        .iter()
        .map(|a| NewRecipient {
            address: (*a).into(),
            orcpt: None,
            notify: None,
        })
        .collect();
    m
}

async fn listed(spool: &Spool, filter: ListFilter, limit: Option<u64>, page: u32) -> Vec<QueueId> {
    let mut pages = spool.pages(filter, limit, page);
    let mut ids = Vec::new();
    while let Some(page_of) = pages.next().await.expect("page") {
        assert!(!page_of.is_empty() && page_of.len() <= page as usize + 1);
        ids.extend(page_of.into_iter().map(|m| m.id));
    }
    ids
}

/// Issue #11 item 5: `queue list` reads the queue a page at a time, by id,
/// with its filters and limit in the query; every page size and limit gives
/// the same messages in the same order, and each filter selects exactly the
/// messages `state()` names so (and their domains).
#[tokio::test]
async fn a_listing_pages_by_id_with_its_filters_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let mut ids = Vec::new();
    for n in 0..9 {
        let id = QueueId::generate();
        let rcpts: &[&str] = match n % 3 {
            0 => &["a@One.Example", "b@two.example"],
            1 => &["c@two.example"],
            _ => &["d@three.example", "e@one.example"],
        };
        put(&spool, &id, to(rcpts)).await;
        ids.push(id);
    }
    // 0, 4: held; 1, 5: deferred (tried once); 2: its one.example recipient
    // delivered, so it goes to one.example no more; the rest queued.
    for i in [0, 4] {
        assert!(spool.hold(&ids[i]).await.expect("hold") > 0);
    }
    let update = |idx, status| RecipientUpdate {
        idx,
        status,
        next_attempt: now_unix() + 300,
        reply: "451 later".into(),
        kind: None,
    };
    for i in [1, 5] {
        let u = vec![update(0, RecipientStatus::Queued)];
        spool.record(&ids[i], u, None).await.expect("record");
    }
    let u = vec![update(1, RecipientStatus::Delivered)];
    spool.record(&ids[2], u, None).await.expect("record");

    let mut sorted = ids.clone();
    sorted.sort();
    let all = ListFilter::default();
    for page in [1, 2, 3, 4, 8, 9, 10, LIST_PAGE] {
        assert_eq!(listed(&spool, all.clone(), None, page).await, sorted);
        for limit in [1, 2, 3, 8, 9, 20] {
            let got = listed(&spool, all.clone(), Some(limit), page).await;
            assert_eq!(
                got,
                sorted[..sorted.len().min(limit as usize)],
                "{page} {limit}"
            );
        }
    }
    let mut pages = spool.pages(all.clone(), Some(9), 4);
    while pages.next().await.expect("page").is_some() {}
    assert!(
        !pages.more(),
        "a limit of exactly the queue leaves nothing out"
    );
    let mut pages = spool.pages(all.clone(), Some(8), 4);
    while pages.next().await.expect("page").is_some() {}
    assert!(pages.more());
    assert!(
        spool
            .pages(all.clone(), Some(0), 4)
            .next()
            .await
            .expect("page")
            .is_none()
    );

    let every = spool.pages(all, None, LIST_PAGE).all().await.expect("all");
    let chosen = |keep: &dyn Fn(&QueuedMessage) -> bool| -> Vec<QueueId> {
        every
            .iter()
            .filter(|m| keep(m))
            .map(|m| m.id.clone())
            .collect()
    };
    for state in [
        MessageState::Queued,
        MessageState::Deferred,
        MessageState::Held,
    ] {
        let filter = ListFilter {
            state: Some(state),
            domain: None,
            user: None,
        };
        let want = chosen(&|m| m.state() == state.as_str());
        assert!(!want.is_empty(), "{state:?}");
        for page in [1, 2, LIST_PAGE] {
            assert_eq!(
                listed(&spool, filter.clone(), None, page).await,
                want,
                "{state:?}"
            );
        }
    }
    for domain in [
        "ONE.example",
        "two.example",
        "three.example",
        "four.example",
    ] {
        let pending_at = |m: &QueuedMessage| {
            m.recipients.iter().any(|r| {
                r.status == RecipientStatus::Queued
                    && recipient_domain(&r.address) == domain.to_lowercase()
            })
        };
        let filter = ListFilter {
            state: None,
            domain: Some(domain.into()),
            user: None,
        };
        let want = chosen(&pending_at);
        for page in [1, 2, LIST_PAGE] {
            assert_eq!(
                listed(&spool, filter.clone(), None, page).await,
                want,
                "{domain}"
            );
        }
        let filter = ListFilter {
            state: Some(MessageState::Held),
            ..filter
        };
        let want = chosen(&|m| pending_at(m) && m.state() == "held");
        assert_eq!(
            listed(&spool, filter.clone(), Some(1), 1).await,
            want[..want.len().min(1)]
        );
    }
    let one = ListFilter {
        state: None,
        domain: Some("one.example".into()),
        user: None,
    };
    assert!(
        !listed(&spool, one, None, 2).await.contains(&ids[2]),
        "delivered there"
    );
}

/// Each listing query reads a message's recipients by its primary key, not
/// through the summary or due index (which SQLite prefers without statistics,
/// and which made one page of `--state held` read every held recipient for
/// each message).
#[tokio::test]
async fn listing_queries_read_recipients_by_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Spool::open(dir.path()).await.expect("open"));
    let mut conn = super::raw_connection(dir.path()).await;
    let states = [
        None,
        Some(MessageState::Queued),
        Some(MessageState::Deferred),
        Some(MessageState::Held),
    ];
    for state in states {
        for domain in [None, Some("d.example".to_string())] {
            let filter = ListFilter {
                state,
                domain,
                user: None,
            };
            let (conditions, bound) = list_conditions(&filter, true);
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT m.id FROM message m {conditions} ORDER BY m.id LIMIT ?"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind("x");
            for value in bound {
                query = query.bind(value);
            }
            let plan: Vec<String> = query
                .bind(10)
                .fetch_all(&mut conn)
                .await
                .expect("plan")
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            for step in &plan {
                assert!(
                    step.contains("sqlite_autoindex_message_1 (id>?)")
                        || step.contains("sqlite_autoindex_recipient_1 (message_id=?")
                        || step.contains("SUBQUERY"),
                    "{state:?}: {plan:?}"
                );
            }
        }
    }
}
