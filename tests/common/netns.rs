//! Network namespaces for tests that need their own network stack (fixed ports, iptables).

use std::process::{Child, Command, Stdio};

/// A network namespace made for one test (removed on drop, with the processes started in it).
pub struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    pub fn new() -> Netns {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "l8t{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let out = self
            .cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&mut self, args: &[&str], log: &std::path::Path) {
        self.spawn_in(args, log, std::path::Path::new("/"));
    }

    /// Start a process in the namespace with `cwd` as its working directory.
    pub fn spawn_in(&mut self, args: &[&str], log: &std::path::Path, cwd: &std::path::Path) {
        let log = std::fs::File::create(log).expect("log");
        let child = self
            .cmd(args)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push(child);
    }

    pub fn curl(&self, url: &str) -> (String, String) {
        self.curl_with(&[], url)
    }

    /// curl with extra arguments (`-H`, ...): (status code, body).
    pub fn curl_with(&self, extra: &[&str], url: &str) -> (String, String) {
        let mut args = vec!["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.cmd(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (code.to_string(), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed");
}
