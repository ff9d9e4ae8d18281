//! Headless Chromium driven over WebDriver: chromedriver started on a free port of 127.0.0.1
//! (never downloaded: the Debian packages `chromium` and `chromium-driver`), the console's own
//! checks (axe-core, vendored for tests only, on every page), and a screenshot per page.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// axe-core, vendored for these tests only (see `crates/console/tests/vendor/NOTICE.md`).
const AXE: &str = include_str!("../../../console/tests/vendor/axe.min.js");
/// Longest wait for a page a click asked for (a test event waits up to 35 s for its attempt,
/// longer than a circuit opened by earlier failures stays open).
const WAIT: Duration = Duration::from_secs(60);

/// The browser and its driver, from `DISPATCH_CHROMIUM` / `DISPATCH_CHROMEDRIVER` or the Debian
/// packages' paths.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, default: &str| {
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default));
        path.exists().then_some(path)
    };
    Some((
        find("DISPATCH_CHROMIUM", "/usr/bin/chromium")?,
        find("DISPATCH_CHROMEDRIVER", "/usr/bin/chromedriver")?,
    ))
}

/// Where screenshots go: `target/console-screenshots/` (or `DISPATCH_SCREENSHOTS_DIR`).
pub fn screenshots_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DISPATCH_SCREENSHOTS_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots")
}

/// A headless Chromium session; its driver (and the browser it started) end with it.
pub struct Browser {
    pub client: Client,
    pub base: String,
    driver: std::process::Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group (the browser is in it): end them all.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts the browser, or says why it cannot: `None` (the test is skipped) unless `CI` is
    /// `true`, where a missing browser fails the test.
    pub async fn start(base: &str) -> Option<Self> {
        let Some((chromium, chromedriver)) = binaries() else {
            let message = "console browser tests skipped: chromium and chromedriver are not \
                           installed (apt-get install chromium chromium-driver)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("{message}");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("chromedriver starts")
        };
        let mut options = json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--no-first-run", "--disable-extensions"],
        });
        if let Ok(dir) = std::env::var("DISPATCH_CHROMIUM_USER_DATA") {
            options["args"]
                .as_array_mut()
                .expect("args")
                .push(json!(format!("--user-data-dir={dir}")));
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("chromedriver did not start a browser: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Some(Self {
            client,
            base: base.to_owned(),
            driver,
        })
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("the page loads");
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("a URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The text of the first element matching `css`, once it can be read (a page still being
    /// replaced by the one a click asked for is read again).
    pub async fn text(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let read = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(text) => return text,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("{css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until the text of `css` contains `needle` (the page a click led to has loaded),
    /// and returns it.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} never showed {needle:?}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the address's path starts with `prefix`, and returns path and query.
    pub async fn wait_path(&self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return path;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached {prefix}: at {path}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .expect("clicked");
    }

    pub async fn click_link(&self, text: &str) {
        self.client
            .find(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("link {text:?}: {e}"))
            .click()
            .await
            .expect("clicked");
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.expect("cleared");
        field.send_keys(value).await.expect("typed");
    }

    pub async fn source(&self) -> String {
        self.client.source().await.expect("the page's source")
    }

    /// Runs axe-core on the page: panics listing every serious or critical violation.
    pub async fn check_accessibility(&self, page: &str) {
        self.client.execute(AXE, vec![]).await.expect("axe loads");
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations
                        .filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                             v.nodes.map(n => n.target.join(' ')).join(', '))))
                    .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .expect("axe runs");
        let found: Vec<Value> = found.as_array().cloned().unwrap_or_default();
        assert!(
            found.is_empty(),
            "{page}: accessibility violations: {found:#?}"
        );
    }

    /// Saves a PNG of the page as `<name>.png` in [`screenshots_dir`].
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("the screenshots directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is saved");
    }

    /// Waits until `check` holds for the page (reloading it between tries), at most `patience`.
    pub async fn reload_until(&self, path: &str, patience: Duration, check: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            self.goto(path).await;
            let html = self.source().await;
            if check(&html) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never showed what was awaited: {html}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn close(self) {
        let client = self.client.clone();
        let _ = client.close().await;
    }
}
