//! The dashboard's pages, written as HTML here: small pages, no template
//! engine (every value goes through `esc`), no script, one inline style.

use std::fmt::Write;

use axum::response::Html;

use super::sessions::Session;
use crate::portmap::PortWeek;
use crate::spool::{QueuedMessage, StuckGroup, Summary};
use crate::store::{AccountView, FlowMinute};

/// Rows a table shows at most; the CLI pages through the rest.
pub const ROWS: u32 = 200;

fn esc(text: &str) -> String {
    crate::http::xml_escape(text)
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
nav a{margin-right:1em}form.inline{display:inline}.bad{color:#a00}.good{color:#070}.default{color:#888}";

/// A whole page: the navigation (and sign-out, with the CSRF token) when
/// signed in.
fn page(title: &str, session: Option<&Session>, body: &str) -> Html<String> {
    let nav = match session {
        Some(s) => format!(
            "<nav><a href=\"/dashboard\">Flow</a><a href=\"/dashboard/queue\">Stuck mail</a>\
             <a href=\"/dashboard/ports\">Port map</a><a href=\"/dashboard/accounts\">Accounts</a>\
             <form class=\"inline\" method=\"post\" action=\"/dashboard/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button>Sign out {}</button></form></nav>",
            esc(&s.csrf),
            esc(&s.admin)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} - Postern</title><style>{STYLE}</style></head>\
         <body>{nav}<h1>{title}</h1>{body}</body></html>",
        title = esc(title)
    ))
}

pub fn login(error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"bad\">{}</p>", esc(e))
    });
    page(
        "Sign in",
        None,
        &format!(
            "{error}<form method=\"post\" action=\"/dashboard/login\">\
             <p><label>Name <input name=\"name\" autocomplete=\"username\" required></label></p>\
             <p><label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required></label></p>\
             <p><button>Sign in</button></p></form>"
        ),
    )
}

pub fn overview(
    session: &Session,
    summary: &Summary,
    port25_blocked: bool,
    fallback: Option<&str>,
    chart: &str,
) -> Html<String> {
    let oldest = summary.oldest.map_or("none".to_string(), crate::clock::age);
    let port25 = match (port25_blocked, fallback) {
        (false, _) => "<span class=\"good\">open</span>".to_string(),
        (true, Some(relay)) => format!(
            "<span class=\"bad\">blocked</span>: mail for MX hosts goes through {}",
            esc(relay)
        ),
        (true, None) => "<span class=\"bad\">blocked</span>, and no fallback relay".to_string(),
    };
    let mut destinations = String::new();
    for d in summary.destinations.iter().take(20) {
        let _ = write!(
            destinations,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&d.domain),
            d.recipients
        );
    }
    page(
        "Flow",
        Some(session),
        &format!(
            "{chart}<h2>The queue now</h2>\
             <table id=\"queue-summary\"><tr><th>Messages queued</th><td>{}</td></tr>\
             <tr><th>Recipients not tried yet</th><td>{}</td></tr>\
             <tr><th>Recipients deferred</th><td>{}</td></tr>\
             <tr><th>Recipients held</th><td>{}</td></tr>\
             <tr><th>Oldest message</th><td>{oldest}</td></tr>\
             <tr><th>Outbound port 25</th><td>{port25}</td></tr></table>\
             <h2>Waiting, by destination</h2><table><tr><th>Domain</th><th>Recipients</th></tr>\
             {destinations}</table>",
            summary.messages, summary.queued, summary.deferred, summary.held
        ),
    )
}

/// The last day's flow as an inline SVG chart: one line per kind, in
/// 15-minute steps, scaled to the busiest step; and the last hour's totals.
pub fn flow(minutes: &[FlowMinute], now_minute: i64) -> String {
    const STEP: i64 = 15;
    const STEPS: i64 = crate::flow::MINUTES_KEPT / STEP;
    const WIDTH: i64 = 960;
    const HEIGHT: i64 = 200;
    let first = now_minute - crate::flow::MINUTES_KEPT + 1;
    let mut steps = vec![[0u64; 4]; STEPS as usize];
    let mut last_hour = [0u64; 4];
    for m in minutes
        .iter()
        .filter(|m| m.minute >= first && m.minute <= now_minute)
    {
        let counts = [m.accepted, m.delivered, m.deferred, m.bounced];
        let step = &mut steps[((m.minute - first) / STEP) as usize];
        for (s, c) in step.iter_mut().zip(counts) {
            *s += c;
        }
        if m.minute > now_minute - 60 {
            for (h, c) in last_hour.iter_mut().zip(counts) {
                *h += c;
            }
        }
    }
    let top = steps.iter().flatten().copied().max().unwrap_or(0).max(1);
    let series = [
        ("accepted", "#06c"),
        ("delivered", "#070"),
        ("deferred", "#c80"),
        ("bounced", "#a00"),
    ];
    let mut svg = format!(
        "<svg id=\"flow-chart\" viewBox=\"0 0 {WIDTH} {h}\" width=\"{WIDTH}\" height=\"{h}\" \
         role=\"img\" aria-label=\"Mail per 15 minutes over the last 24 hours\">\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\
         <text x=\"4\" y=\"14\" font-size=\"12\">{top} per 15 min</text>\
         <text x=\"4\" y=\"{label}\" font-size=\"12\">24 h ago</text>\
         <text x=\"{now_x}\" y=\"{label}\" font-size=\"12\">now</text>",
        h = HEIGHT + 20,
        label = HEIGHT + 16,
        now_x = WIDTH - 30,
    );
    for (i, (name, colour)) in series.iter().enumerate() {
        let points: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(x, step)| {
                let x = x as i64 * WIDTH / (STEPS - 1);
                let y = HEIGHT - (step[i] as i64 * (HEIGHT - 20) / top as i64);
                format!("{x},{y}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline id=\"flow-{name}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
             points=\"{}\"><title>{name}</title></polyline>",
            points.join(" ")
        );
    }
    svg.push_str("</svg>");
    let legend: String = series
        .iter()
        .zip(last_hour)
        .map(|((name, colour), n)| {
            format!(
                "<tr><td style=\"color:{colour}\">{name}</td><td id=\"last-hour-{name}\">{n}</td></tr>"
            )
        })
        .collect();
    format!("{svg}<table><tr><th>In the last hour</th><th>Count</th></tr>{legend}</table>")
}

pub fn queue(
    session: &Session,
    stuck: &[StuckGroup],
    deferred: &[QueuedMessage],
    held: &[QueuedMessage],
) -> Html<String> {
    let mut groups = String::new();
    for g in stuck {
        let _ = write!(
            groups,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.domain),
            esc(g.kind.as_deref().unwrap_or("-")),
            g.recipients
        );
    }
    let rows = |messages: &[QueuedMessage]| -> String {
        messages.iter().map(|m| message_row(session, m)).collect()
    };
    page(
        "Stuck mail",
        Some(session),
        &format!(
            "<h2>Deferred, by destination and last failure</h2>\
             <table id=\"stuck\"><tr><th>Domain</th><th>Last failure</th><th>Recipients</th></tr>{groups}</table>\
             <h2>Deferred messages (the first {ROWS})</h2>{MESSAGES}{deferred}</table>\
             <h2>Held messages (the first {ROWS})</h2>{MESSAGES}{held}</table>",
            deferred = rows(deferred),
            held = rows(held),
        ),
    )
}

/// The head of a table of messages.
const MESSAGES: &str = "<table class=\"messages\"><tr><th>Queue id</th><th>State</th><th>From</th>\
    <th>To</th><th>Last reply</th><th></th></tr>";

/// A message and the buttons that act on it.
fn message_row(session: &Session, m: &QueuedMessage) -> String {
    let pending: Vec<&crate::spool::QueuedRecipient> = m
        .recipients
        .iter()
        .filter(|r| r.status == crate::spool::RecipientStatus::Queued)
        .collect();
    let to: Vec<String> = pending.iter().map(|r| esc(&r.address)).collect();
    let last = pending
        .iter()
        .find_map(|r| r.last_reply.as_deref())
        .map_or(String::new(), esc);
    let buttons: String = ["retry", "hold", "release", "delete"]
        .iter()
        .map(|action| {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/dashboard/queue/{id}/{action}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button name=\"do\" value=\"{action}\">{action}</button></form>",
                id = esc(m.id.as_str()),
                csrf = esc(&session.csrf)
            )
        })
        .collect();
    format!(
        "<tr id=\"m-{id}\"><td>{id}</td><td>{state}</td><td>{from}</td><td>{to}</td>\
         <td>{last}</td><td>{buttons}</td></tr>",
        id = esc(m.id.as_str()),
        state = m.state(),
        from = esc(&m.sender),
        to = to.join("<br>"),
    )
}

/// Ports as a list: "587, 26".
fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ports(
    session: &Session,
    week: &PortWeek,
    mail_ports: &[u16],
    last_resort: Option<u16>,
) -> Html<String> {
    let mut ports = String::new();
    for p in &week.ports {
        let _ = write!(
            ports,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.port, p.connected, p.authenticated, p.only_this
        );
    }
    let mut switched = String::new();
    for s in &week.switched {
        let _ = write!(
            switched,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.network),
            list(&s.before),
            list(&s.now)
        );
    }
    let mut checks = String::new();
    for c in &week.checks {
        let missed: Vec<u16> = mail_ports
            .iter()
            .copied()
            .filter(|p| !c.reached.contains(p))
            .collect();
        let _ = write!(
            checks,
            "<tr><td>{}</td><td>{} ago</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            esc(&c.network),
            crate::clock::age(c.at),
            list(&c.reached),
            list(&missed)
        );
    }
    let last_resort = match last_resort {
        Some(port) => {
            let rows: String = week
                .last_resort_only
                .iter()
                .map(|n| format!("<tr><td>{}</td></tr>", esc(n)))
                .collect();
            format!(
                "<h2>Networks that reach only port {port}</h2><p>Seen in the last {days} days, \
                 and never on another mail port: every other one may be blocked from there.</p>\
                 <table id=\"last-resort\"><tr><th>Network</th></tr>{rows}</table>",
                days = crate::portmap::WEEK_DAYS
            )
        }
        None => "<p>Submission on port 443 is off (<code>[http] submission_on_tls</code>): \
                 networks that block every other mail port cannot reach this server.</p>"
            .to_string(),
    };
    page(
        "Port map",
        Some(session),
        &format!(
            "<p>Client networks (/24, /48) that reached each submission port in the last \
             {days} days.</p>\
             <table id=\"ports\"><tr><th>Port</th><th>Networks connected</th>\
             <th>Networks that signed in</th><th>Networks that reach only this port</th></tr>\
             {ports}</table>\
             <h2>Networks that switched ports</h2><p>Seen on a port before, and in the last \
             {days} days only on others: an ISP may have begun blocking it.</p>\
             <table id=\"switched\"><tr><th>Network</th><th>Before</th><th>Now</th></tr>{switched}</table>\
             {last_resort}\
             <h2>Checks run from client networks</h2><p>The latest <code>postern check</code> \
             from each network in the last {days} days: which of this server's mail ports its \
             probes reached (the port echo), and which they did not (blocked on the way, or not \
             tried).</p>\
             <table id=\"checks\"><tr><th>Network</th><th>When</th><th>Reached</th>\
             <th>Not reached</th></tr>{checks}</table>",
            days = crate::portmap::WEEK_DAYS
        ),
    )
}

pub fn accounts(
    session: &Session,
    total: u64,
    views: &[AccountView],
    defaults: &crate::config::Limits,
) -> Html<String> {
    // A user's own limit, or `[limits]`' default in grey.
    let limit = |own: Option<u64>, default: u64| match own {
        Some(n) => n.to_string(),
        None => format!("<span class=\"default\">{default}</span>"),
    };
    let mut rows = String::new();
    for v in views {
        let hold = v.hold.as_ref().map_or(String::new(), |h| {
            format!(
                "<span class=\"bad\">held {} ago</span>: {}",
                crate::clock::age(h.since),
                esc(&h.reason)
            )
        });
        let login = v.last_login.map_or("never".to_string(), |(at, port)| {
            format!("{} ago, port {port}", crate::clock::age(at))
        });
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{hold}</td><td>{login}</td></tr>",
            esc(&v.address),
            v.sent_day,
            v.sent_week,
            limit(
                v.limits.messages_per_hour,
                defaults.messages_per_hour_per_user
            ),
            limit(
                v.limits.recipients_per_day,
                defaults.recipients_per_day_per_user
            ),
            limit(
                v.limits.new_recipients_per_day,
                defaults.new_recipients_per_day_per_user
            ),
        );
    }
    let shown = match total {
        1 => "<p>1 account.</p>".to_string(),
        n if n > views.len() as u64 => format!(
            "<p>{n} accounts; the first {} here (<code>postern user list</code> has them all).</p>",
            views.len()
        ),
        n => format!("<p>{n} accounts.</p>"),
    };
    page(
        "Accounts",
        Some(session),
        &format!(
            "{shown}<p>Held accounts first, then the busiest of the last day. Limits in grey \
             are the [limits] defaults; <code>postern user limits</code> and \
             <code>postern user release</code> change them.</p>\
             <table id=\"accounts\"><tr><th>Account</th><th>Sent, 24 h</th><th>Sent, 7 days</th>\
             <th>Messages per hour</th><th>Recipients per day</th><th>New recipients per day</th>\
             <th>Hold</th><th>Last SMTP login</th></tr>{rows}</table>"
        ),
    )
}
