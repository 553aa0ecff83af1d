//! Network namespaces for fault tests (`ip netns`, veth pairs; needs root, as in CI).
//!
//! Every name carries a per-run tag (the test process id), so parallel runs do not collide;
//! everything created is deleted on drop (deleting a namespace deletes the veth ends in it,
//! and with them their peers).

#![allow(dead_code)]

use std::process::Command;

/// Runs `ip args...`; `Err` with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2 installed?): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A short tag unique to this test process, for namespace and interface names (an
/// interface name has at most 15 bytes).
pub fn run_tag() -> String {
    format!("{}", std::process::id() % 1_000_000)
}

/// A network namespace, deleted on drop. Its loopback is up.
pub struct Netns {
    /// The namespace name (`ip netns exec NAME ...`).
    pub name: String,
}

impl Netns {
    /// Creates `name` with its loopback up.
    ///
    /// # Errors
    /// The `ip` failure, e.g. when not root.
    pub fn add(name: &str) -> Result<Netns, String> {
        // A namespace left over by a killed earlier run with the same tag.
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME args...`.
    ///
    /// # Errors
    /// The `ip` failure.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Adds `addr` (CIDR) to the loopback: an address of one process of this namespace,
    /// independent of any link.
    ///
    /// # Errors
    /// The `ip` failure.
    pub fn add_loopback_addr(&self, cidr: &str) -> Result<(), String> {
        self.ip(&["addr", "add", cidr, "dev", "lo"])
    }

    /// The command prefix that runs a program inside: `ip netns exec NAME`.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.name.clone()]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Creates a veth pair `a` <-> `b`, moves `a` into `ns_a` (or leaves it in the root
/// namespace for `None`) with address `cidr_a`, and `b` into `ns_b` with `cidr_b`; both up.
///
/// # Errors
/// The first `ip` failure.
pub fn veth(
    (a, ns_a, cidr_a): (&str, Option<&Netns>, &str),
    (b, ns_b, cidr_b): (&str, Option<&Netns>, &str),
) -> Result<(), String> {
    let _ = ip(&["link", "del", a]);
    let _ = ip(&["link", "del", b]);
    ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
    for (dev, ns, cidr) in [(a, ns_a, cidr_a), (b, ns_b, cidr_b)] {
        match ns {
            Some(ns) => {
                ip(&["link", "set", dev, "netns", &ns.name])?;
                ns.ip(&["addr", "add", cidr, "dev", dev])?;
                ns.ip(&["link", "set", dev, "up"])?;
            }
            None => {
                ip(&["addr", "add", cidr, "dev", dev])?;
                ip(&["link", "set", dev, "up"])?;
            }
        }
    }
    Ok(())
}

/// A veth end left in the root namespace, deleted on drop (with its peer).
pub struct RootLink(pub String);

impl Drop for RootLink {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.0]);
    }
}
