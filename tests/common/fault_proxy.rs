//! A fault-injecting HTTP proxy in front of moto, for what moto cannot show: throttling, 503s,
//! connections reset before the request reached AWS, responses lost after it took effect,
//! latency, and EC2 out of capacity. It also gives RunInstances the client-token idempotency
//! real EC2 has (moto ignores ClientToken): a token seen before is answered with the first
//! call's reply, never launched again. One request per connection (`Connection: close`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttle,
    Unavailable,
    ResetBefore,
    LostResponse,
    Latency,
    NoCapacity,
}

#[derive(Default)]
struct State {
    /// RunInstances ClientToken → moto's first reply.
    tokens: BTreeMap<String, Vec<u8>>,
    injected: BTreeMap<Fault, u64>,
    requests: u64,
    token_replays: u64,
    /// Faults for the next RunInstances calls, in order, before the random ones.
    run_script: std::collections::VecDeque<Fault>,
    /// Every request, as it reached the proxy.
    calls: Vec<Call>,
    /// The next request with this key and action is forwarded, but its reply held.
    hold: Option<(String, String)>,
    /// 1: a request is held (its effect applied); 2: its reply may go.
    held: u8,
}

/// One request as it reached the proxy (whole, before any fault or forwarding).
#[derive(Clone, Debug)]
pub struct Call {
    pub at: std::time::Instant,
    /// The access key id it was signed with: which agent sent it.
    pub key: String,
    /// The API action (`RunInstances`, `RegisterInstancesWithLoadBalancer`, DynamoDB's
    /// `TransactWriteItems`, ...).
    pub action: String,
}

impl Call {
    /// A call that changes the fleet: launch, start, stop, terminate, tag, (de)register.
    pub fn changes_fleet(&self) -> bool {
        matches!(
            self.action.as_str(),
            "RunInstances"
                | "StartInstances"
                | "StopInstances"
                | "TerminateInstances"
                | "CreateTags"
                | "DeleteTags"
                | "RegisterInstancesWithLoadBalancer"
                | "DeregisterInstancesFromLoadBalancer"
        )
    }
}

pub struct FaultProxy {
    pub endpoint: String,
    on: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    cv: Arc<std::sync::Condvar>,
}

impl FaultProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`); faults at `rate` while switched on.
    pub fn start(upstream: &str, rate: f64, seed: u64) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("http upstream")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let on = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let cv = Arc::new(std::sync::Condvar::new());
        let rng = Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed)));
        let (on2, state2, cv2) = (on.clone(), state.clone(), cv.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (up, on, st, rng, cv) = (
                    upstream.clone(),
                    on2.clone(),
                    state2.clone(),
                    rng.clone(),
                    cv2.clone(),
                );
                std::thread::spawn(move || serve(conn, &up, rate, &on, (&st, &cv), &rng));
            }
        });
        FaultProxy {
            endpoint,
            on,
            state,
            cv,
        }
    }

    /// The next request signed with `key` for `action` reaches moto, and its reply is held
    /// until [`FaultProxy::release`]: the sender is caught between an effect and its answer.
    pub fn hold_reply(&self, key: &str, action: &str) {
        let mut s = self.state.lock().unwrap();
        s.hold = Some((key.to_string(), action.to_string()));
        s.held = 0;
    }

    /// Waits up to `secs` for the held request to have taken effect.
    pub fn wait_held(&self, secs: u64) -> bool {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .cv
            .wait_timeout_while(s, Duration::from_secs(secs), |s| s.held != 1)
            .unwrap();
        s.held == 1
    }

    /// Lets the held reply go.
    pub fn release(&self) {
        self.state.lock().unwrap().held = 2;
        self.cv.notify_all();
    }

    pub fn faults(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// The next RunInstances calls (with faults on) get these faults, in order.
    pub fn script_run_instances(&self, faults: &[Fault]) {
        self.state.lock().unwrap().run_script.extend(faults);
    }

    /// Every request so far, in the order they reached the proxy.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Faults injected by kind, requests seen, RunInstances answered from the token cache.
    pub fn stats(&self) -> (BTreeMap<Fault, u64>, u64, u64) {
        let s = self.state.lock().unwrap();
        (s.injected.clone(), s.requests, s.token_replays)
    }
}

/// Reads one HTTP request: head and Content-Length body.
fn read_request(c: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        let n = c.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = c.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Some((head, body))
}

/// The head with `Connection: close` in place of any Connection header.
fn close_head(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn form_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn error_reply(action: &str, status: u16, code: &str) -> Vec<u8> {
    let ec2 = matches!(
        action,
        "RunInstances" | "DescribeInstances" | "TerminateInstances" | "CreateTags"
    );
    let body = if ec2 {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code>\
             <Message>injected by the test proxy</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
        )
    } else {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected by the \
             test proxy</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"
        )
    };
    let reason = if status == 500 {
        "Internal Server Error"
    } else {
        "Service Unavailable"
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn forward(up: &str, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut u = TcpStream::connect(up).ok()?;
    u.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    u.write_all(close_head(head).as_bytes()).ok()?;
    u.write_all(body).ok()?;
    let mut resp = Vec::new();
    u.read_to_end(&mut resp).ok()?;
    // Our own Connection: close on the way back.
    let i = resp.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut out = close_head(&String::from_utf8_lossy(&resp[..i])).into_bytes();
    out.extend_from_slice(&resp[i..]);
    Some(out)
}

fn serve(
    mut c: TcpStream,
    up: &str,
    rate: f64,
    on: &AtomicBool,
    (st, cv): (&Mutex<State>, &std::sync::Condvar),
    rng: &Mutex<ChaCha8Rng>,
) {
    let Some((head, body)) = read_request(&mut c) else {
        return;
    };
    let text = String::from_utf8_lossy(&body).to_string();
    // Query APIs (EC2, ELB, CloudWatch) name it in the form; JSON ones in X-Amz-Target.
    let action = form_value(&text, "Action")
        .map(str::to_string)
        .or_else(|| {
            let target = header(&head, "x-amz-target")?;
            Some(target.rsplit('.').next()?.to_string())
        })
        .unwrap_or_default();
    let key = header(&head, "authorization")
        .and_then(|a| {
            a.split("Credential=")
                .nth(1)?
                .split('/')
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let hold = {
        let mut s = st.lock().unwrap();
        let hold = s.hold.as_ref() == Some(&(key.clone(), action.clone()));
        if hold {
            s.hold = None;
        }
        s.calls.push(Call {
            at: std::time::Instant::now(),
            key,
            action: action.clone(),
        });
        hold
    };
    if hold {
        let Some(reply) = forward(up, &head, &body) else {
            return;
        };
        let mut s = st.lock().unwrap();
        s.held = 1;
        cv.notify_all();
        let _s = cv
            .wait_timeout_while(s, Duration::from_secs(300), |s| s.held != 2)
            .unwrap();
        let _ = c.write_all(&reply);
        return;
    }
    let token = (action == "RunInstances")
        .then(|| form_value(&text, "ClientToken").map(str::to_string))
        .flatten();
    st.lock().unwrap().requests += 1;
    if let Some(t) = &token {
        let cached = st.lock().unwrap().tokens.get(t).cloned();
        if let Some(reply) = cached {
            st.lock().unwrap().token_replays += 1;
            let _ = c.write_all(&reply);
            return;
        }
    }
    let scripted = if action == "RunInstances" && on.load(Ordering::SeqCst) {
        st.lock().unwrap().run_script.pop_front()
    } else {
        None
    };
    let fault = scripted.or_else(|| {
        let mut r = rng.lock().unwrap();
        (on.load(Ordering::SeqCst) && r.random::<f64>() < rate).then(|| {
            match r.random_range(0..6) {
                0 => Fault::Throttle,
                1 => Fault::Unavailable,
                2 => Fault::ResetBefore,
                3 => Fault::LostResponse,
                4 => Fault::Latency,
                _ if action == "RunInstances" => Fault::NoCapacity,
                _ => Fault::Throttle,
            }
        })
    });
    if let Some(f) = fault {
        *st.lock().unwrap().injected.entry(f).or_default() += 1;
    }
    let throttle = if action.starts_with("Run")
        || action.starts_with("Describe") && action.ends_with("Instances")
        || action == "TerminateInstances"
        || action == "CreateTags"
    {
        "RequestLimitExceeded"
    } else {
        "Throttling"
    };
    match fault {
        Some(Fault::Throttle) => {
            let _ = c.write_all(&error_reply(&action, 503, throttle));
            return;
        }
        Some(Fault::Unavailable) => {
            let _ = c.write_all(&error_reply(&action, 503, "Unavailable"));
            return;
        }
        Some(Fault::NoCapacity) => {
            let _ = c.write_all(&error_reply(&action, 500, "InsufficientInstanceCapacity"));
            return;
        }
        Some(Fault::ResetBefore) => {
            let _ = c.shutdown(Shutdown::Both);
            return;
        }
        Some(Fault::Latency) => std::thread::sleep(Duration::from_millis(
            rng.lock().unwrap().random_range(200..2000),
        )),
        _ => {}
    }
    let Some(reply) = forward(up, &head, &body) else {
        // moto may or may not have launched: the caller cannot tell.
        let _ = c.shutdown(Shutdown::Both);
        return;
    };
    if let Some(t) = token {
        if reply.starts_with(b"HTTP/1.1 200") || reply.starts_with(b"HTTP/1.0 200") {
            st.lock().unwrap().tokens.insert(t, reply.clone());
        }
    }
    if fault == Some(Fault::LostResponse) {
        // It took effect; the caller never hears of it.
        let _ = c.shutdown(Shutdown::Both);
        return;
    }
    let _ = c.write_all(&reply);
}
