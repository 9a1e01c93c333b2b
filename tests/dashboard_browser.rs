//! The web dashboard (issue #15) in a real browser: headless Chromium from
//! Debian, driven by Selenium through chromedriver. An administrator signs
//! in, sees a message sent by swaks in the flow chart and the stuck-mail
//! page, fails to retry it once the form's CSRF token is taken out, retries
//! it with the token and sees it delivered; the port map and the accounts
//! view show alice's login. Each page's screenshot is written to
//! `target/screenshots/dashboard/` (the README's pictures come from there).
//! Skipped, saying so, where Chromium, chromedriver or Selenium is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::delivery::show_after_attempt;

/// The browser's part. Prints one JSON object of what it saw.
const BROWSER: &str = r#"
import json, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

base, shots, qid, chromium, chromedriver = sys.argv[1:6]
options = webdriver.ChromeOptions()
options.binary_location = chromium
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1100", "--no-first-run"):
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service(chromedriver), options=options)
driver.set_page_load_timeout(20)
out = {}
def shot(name):
    driver.save_screenshot(f"{shots}/{name}.png")
def text(id):
    return driver.find_element(By.ID, id).text
def click(button):
    # A click returns before the page it posts to has loaded.
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(page))
def submit(form_action, keep_csrf=True):
    form = driver.find_element(By.CSS_SELECTOR, f'form[action="{form_action}"]')
    if not keep_csrf:
        driver.execute_script("arguments[0].querySelector('input[name=csrf]').remove()", form)
    click(form.find_element(By.TAG_NAME, "button"))
try:
    driver.get(base + "/dashboard/queue")
    out["anonymous"] = driver.current_url
    shot("login")
    driver.find_element(By.NAME, "name").send_keys("root")
    driver.find_element(By.NAME, "password").send_keys("wrong password")
    click(driver.find_element(By.TAG_NAME, "button"))
    out["wrong"] = driver.find_element(By.CSS_SELECTOR, "p.bad").text
    driver.find_element(By.NAME, "name").send_keys("root")
    driver.find_element(By.NAME, "password").send_keys("s3cret pw")
    click(driver.find_element(By.TAG_NAME, "button"))
    out["signed_in"] = driver.current_url
    out["cookie_js"] = driver.execute_script("return document.cookie")
    out["accepted"] = text("last-hour-accepted")
    out["chart"] = driver.find_element(By.ID, "flow-accepted").get_attribute("points")
    shot("flow")

    driver.get(base + "/dashboard/queue")
    out["queue_lists"] = len(driver.find_elements(By.ID, "m-" + qid)) == 1
    out["stuck"] = text("stuck")
    shot("stuck-mail")
    submit(f"/dashboard/queue/{qid}/retry", keep_csrf=False)
    out["without_csrf"] = driver.find_element(By.TAG_NAME, "body").text
    driver.get(base + "/dashboard/queue")
    submit(f"/dashboard/queue/{qid}/retry")
    out["after_retry"] = driver.current_url
    deadline = time.time() + 20
    while driver.find_elements(By.ID, "m-" + qid) and time.time() < deadline:
        time.sleep(0.5)
        driver.refresh()
    out["gone"] = not driver.find_elements(By.ID, "m-" + qid)

    driver.get(base + "/dashboard")
    out["delivered"] = text("last-hour-delivered")
    shot("flow-delivered")
    driver.get(base + "/dashboard/ports")
    out["ports"] = text("ports")
    shot("port-map")
    # alice's login reaches the store within seconds (the port map writes it).
    deadline = time.time() + 20
    while True:
        driver.get(base + "/dashboard/accounts")
        out["accounts"] = text("accounts")
        if "never" not in out["accounts"] or time.time() > deadline:
            break
        time.sleep(0.5)
    shot("accounts")
finally:
    driver.quit()
print(json.dumps(out))
"#;

/// Where `tool` is on the PATH.
fn on_path(tool: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

/// A Python 3 that has Selenium (Debian's `python3-selenium` is for
/// /usr/bin/python3, which another python3 may shadow on the PATH).
fn selenium_python() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import selenium"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Where the screenshots go: `target/screenshots/dashboard`, emptied first.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("screenshots")
        .join("dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[test]
fn in_chromium_an_admin_sees_stuck_mail_and_retries_it_until_it_is_delivered() {
    let (Some(chromium), Some(driver), Some(python)) = (
        on_path("chromium"),
        on_path("chromedriver"),
        selenium_python(),
    ) else {
        eprintln!(
            "SKIPPED: Chromium, chromedriver or Selenium is missing \
             (apt-get install chromium chromium-driver python3-selenium; .ci/run does)"
        );
        return;
    };
    let relay_port = free_port();
    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "[http]\naddr = \"127.0.0.1:0\"\ndashboard = true\n\
         dashboard_from = [\"127.0.0.1/32\"]\n[delivery]\nretry_min = 600\nretry_max = 1200\n\
         connect_timeout = 2\n[relay]\nhost = \"127.0.0.1\"\nport = {relay_port}\ntls = \"none\"\n"
    )));
    s.add_alice();
    s.cli_stdin_ok(&["admin", "add", "root", "--password-stdin"], "s3cret pw\n");
    s.spawn();
    // alice sends with swaks while the relay is down: the message waits.
    let out = swaks(
        s.addr("submission"),
        &[
            &["--tls", "--header", "Subject: stuck"][..],
            &alice_to_bob("PLAIN")[..],
        ]
        .concat(),
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let qid = queued_id(&said).unwrap_or_else(|| panic!("not queued: {said}"));
    show_after_attempt(&s, &qid);
    let relay = Peer::start(
        format!("127.0.0.1:{relay_port}").parse().expect("addr"),
        &[],
    );

    let shots = screenshot_dir();
    let base = format!("http://{}", s.http_addrs()[0]);
    let out = Command::new(python)
        .args(["-c", BROWSER, &base, shots.to_str().expect("dir"), &qid])
        .args([&chromium, &driver])
        .output()
        .expect("run the browser");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    // Selenium or Chromium may warn on stderr; the result is stdout's.
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
    let field = |name: &str| seen[name].as_str().unwrap_or_default().to_string();

    assert!(field("anonymous").ends_with("/dashboard/login"), "{seen}");
    assert_eq!(field("wrong"), "Wrong name or password.");
    assert_eq!(field("signed_in"), format!("{base}/dashboard"));
    assert_eq!(field("cookie_js"), "", "the session cookie is HttpOnly");
    assert_eq!(field("accepted"), "1", "{seen}");
    let peak = field("chart")
        .split(' ')
        .filter_map(|p| p.split_once(',')?.1.parse::<i64>().ok())
        .min();
    assert!(
        peak.is_some_and(|y| y < 200),
        "the accepted line rises above the baseline: {seen}"
    );
    assert_eq!(seen["queue_lists"], true, "{seen}");
    assert!(
        field("stuck").contains("remote.example unreachable:"),
        "grouped by destination and last failure: {seen}"
    );
    assert!(
        field("without_csrf").contains("CSRF token is missing or wrong"),
        "{seen}"
    );
    assert_eq!(field("after_retry"), format!("{base}/dashboard/queue"));
    assert_eq!(seen["gone"], true, "{seen}");
    let got = relay.wait_for(1, std::time::Duration::from_secs(20));
    assert!(
        got[0]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("Subject: stuck")
    );
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(field("delivered"), "1", "{seen}");
    let port = s.addr("submission").port().to_string();
    assert!(
        field("ports")
            .lines()
            .any(|l| l.starts_with(&format!("{port} 1 1"))),
        "one network connected and signed in on {port}: {seen}"
    );
    assert!(
        field("accounts").contains(&format!("ago, port {port}")),
        "alice's last login and its port: {seen}"
    );
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"queue_retry\"") && l.contains("admin=\"root\"")),
        "the retry is logged with who asked"
    );
    assert_eq!(log.matches("event=\"dashboard_csrf_refused\"").count(), 1);

    for page in [
        "login",
        "flow",
        "stuck-mail",
        "flow-delivered",
        "port-map",
        "accounts",
    ] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).expect(page);
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{page}.png is a picture"
        );
    }
}
