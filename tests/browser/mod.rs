//! A headless Chromium driven through `chromedriver` (Debian's `chromium` and
//! `chromium-driver`, installed by `test-cluster/install-deps.sh`), spoken to over the
//! W3C WebDriver protocol: JSON over HTTP on a loopback port, with no client library.
//! Used by `tests/status_page.rs` and `benches/page.rs`.

#![allow(dead_code)] // each user takes what it needs

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts them; `CHROMIUM` and `CHROMEDRIVER` override.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the driver (and the browser with it) is stopped on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

/// The binaries, or why they are not there.
pub fn binaries() -> Result<(String, String), String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
    for (what, path) in [("chromium", &chromium), ("chromedriver", &driver)] {
        if !Path::new(path).exists() {
            return Err(format!(
                "{what} is not installed at {path} (run `bash test-cluster/install-deps.sh`, which installs Debian's chromium and chromium-driver)"
            ));
        }
    }
    Ok((chromium, driver))
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub fn start(chromium: &str, driver: &str, port: u16) -> Result<Browser, String> {
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {driver}: {e}"))?;
        let mut browser = Browser {
            driver: child,
            port,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match browser.call("GET", "/status", None) {
                Ok(status) if status["ready"] == true => break,
                seen if Instant::now() >= deadline => {
                    return Err(format!("chromedriver not ready after 30 s: {seen:?}"));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,720"],
            },
        }}});
        let reply = browser.call("POST", "/session", Some(capabilities))?;
        browser.session = reply["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {reply}"))?
            .to_string();
        Ok(browser)
    }

    /// Opens `url` in the window.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.command("POST", "url", Some(json!({ "url": url })))
            .map(|_| ())
    }

    /// Runs a script's body in the page (`return ...` gives the value).
    pub fn run(&self, script: &str) -> Result<Value, String> {
        self.command(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Clicks the element `css` selects, as a user would (WebDriver's element click).
    /// The page redraws a group's row when the group changes: an element found just
    /// before a redraw is stale by the click, so the click looks it up again (for up
    /// to 5 s), as a user would click the button now on the screen.
    pub fn click(&self, css: &str) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let id = self.element(css)?;
            match self.command("POST", &format!("element/{id}/click"), Some(json!({}))) {
                Ok(_) => return Ok(()),
                Err(e) if e.contains("stale element") && std::time::Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let id = self.element(css)?;
        self.command(
            "POST",
            &format!("element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .map(|_| ())
    }

    /// Empties the input the element `css` selects.
    pub fn clear(&self, css: &str) -> Result<(), String> {
        let id = self.element(css)?;
        self.command("POST", &format!("element/{id}/clear"), Some(json!({})))
            .map(|_| ())
    }

    /// Accepts the page's open `confirm()` dialog.
    pub fn accept_dialog(&self) -> Result<(), String> {
        self.command("POST", "alert/accept", Some(json!({})))
            .map(|_| ())
    }

    fn element(&self, css: &str) -> Result<String, String> {
        let found = self.command(
            "POST",
            "element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        found[ELEMENT]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("no element {css}: {found}"))
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let encoded = self.command("GET", "screenshot", None)?;
        let text = encoded
            .as_str()
            .ok_or_else(|| format!("screenshot: not a string: {encoded}"))?;
        base64_decode(text)
    }

    fn command(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}/{what}", self.session);
        self.call(method, &path, body)
    }

    /// One WebDriver request; the reply's `value`, or its error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("{path}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("{path}: {e}"))?;
        // chromedriver keeps the connection open after its reply: read by Content-Length.
        let (head, payload) = read_reply(&mut stream).map_err(|e| format!("{path}: {e}"))?;
        let payload = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(&payload)
        } else {
            payload
        };
        let reply: Value =
            serde_json::from_str(&payload).map_err(|e| format!("{path}: {e}: {payload}"))?;
        let value = reply["value"].clone();
        if value.get("error").is_some() {
            return Err(format!("{method} {path}: {value}"));
        }
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP reply: its head, and its body as long as Content-Length says (or to the end).
fn read_reply(stream: &mut TcpStream) -> Result<(String, String), String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if let Some(length) = length
                && raw.len() >= end + 4 + length
            {
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).into_owned();
                return Ok((head, body));
            }
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            let text = String::from_utf8_lossy(&raw).into_owned();
            return match text.split_once("\r\n\r\n") {
                Some((head, body)) => Ok((head.to_string(), body.to_string())),
                None => Err(format!("no HTTP reply: {text:?}")),
            };
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {:?}", c as char)),
        } as u32)
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Ok(&b"hello"[..]));
    assert_eq!(base64_decode("aGk=").as_deref(), Ok(&b"hi"[..]));
    assert_eq!(base64_decode("YWJj").as_deref(), Ok(&b"abc"[..]));
    assert!(base64_decode("a$==").is_err());
}
