//! What the step's own process reads about itself right before its exec
//! (step E16 of [`super::setup::enter_sandbox`]), and how the helper adds
//! its own namespaces to it. Seccomp and no_new_privs are per thread, so
//! only the step itself can say they are in force; the helper only
//! compares. The parsers are pure and tested on kernel text.

use std::path::Path;

use crate::spec::{Observed, ObservedNamespace, OBSERVED_NAMESPACES};
use crate::sys::Syscalls;

/// Reads the step's own view through `sys`: `/proc/self/status`,
/// `/proc/self/net/dev` and `/proc/self/ns/*`. Whatever cannot be read
/// stays `None` (and so not hermetic); nothing here fails the step.
pub(crate) fn observe_step(sys: &dyn Syscalls) -> Observed {
    let mut o = sys
        .read_small_file(Path::new("/proc/self/status"))
        .map(|b| parse_status(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    o.interfaces = sys
        .read_small_file(Path::new("/proc/self/net/dev"))
        .ok()
        .and_then(|b| parse_net_dev(&String::from_utf8_lossy(&b)));
    o.namespaces = OBSERVED_NAMESPACES
        .iter()
        .map(|name| ObservedNamespace {
            name: name.to_string(),
            step_inode: ns_inode(sys, name),
            helper_inode: None,
        })
        .collect();
    o
}

/// Adds the helper's own namespace inodes to what the step observed.
pub fn add_helper_namespaces(sys: &dyn Syscalls, o: &mut Observed) {
    for n in &mut o.namespaces {
        n.helper_inode = ns_inode(sys, &n.name);
    }
}

/// The inode of the calling process's namespace `name`.
fn ns_inode(sys: &dyn Syscalls, name: &str) -> Option<u64> {
    let link = sys.readlink(&Path::new("/proc/self/ns").join(name)).ok()?;
    parse_ns_link(name, &link.to_string_lossy())
}

/// `net:[4026531840]` for `net` -> 4026531840; anything else is `None`.
pub fn parse_ns_link(name: &str, link: &str) -> Option<u64> {
    link.strip_prefix(name)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The facts of `/proc/self/status` (namespaces and interfaces left empty).
pub fn parse_status(text: &str) -> Observed {
    let mut o = Observed::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let dec = || value.parse::<u32>().ok();
        let hex = || u64::from_str_radix(value, 16).ok();
        match key {
            "NoNewPrivs" => o.no_new_privs = dec(),
            "Seccomp" => o.seccomp_mode = dec(),
            "Seccomp_filters" => o.seccomp_filters = dec(),
            "CapEff" => o.cap_eff = hex(),
            "CapPrm" => o.cap_prm = hex(),
            "CapInh" => o.cap_inh = hex(),
            "CapBnd" => o.cap_bnd = hex(),
            "CapAmb" => o.cap_amb = hex(),
            _ => {}
        }
    }
    o
}

/// The interface names of `/proc/net/dev` (two header lines, then
/// `NAME: counters...` per interface); `None` when the text is not that
/// table, so an unexpected format is never read as "no interface".
pub fn parse_net_dev(text: &str) -> Option<Vec<String>> {
    let mut lines = text.lines();
    let (h1, h2) = (lines.next()?, lines.next()?);
    if !h1.contains("Receive") || !h2.contains("bytes") {
        return None;
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, _) = l.split_once(':')?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsh\nUmask:\t0022\nState:\tR (running)\n\
CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n\
Seccomp:\t2\nSeccomp_filters:\t5\nSpeculation_Store_Bypass:\tthread vulnerable\n";

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n";

    fn sealed() -> Observed {
        let mut o = parse_status(STATUS);
        o.interfaces = parse_net_dev(NET_DEV);
        o.namespaces = OBSERVED_NAMESPACES
            .iter()
            .enumerate()
            .map(|(i, n)| ObservedNamespace {
                name: n.to_string(),
                step_inode: Some(4026532000 + i as u64),
                helper_inode: Some(4026531830 + i as u64),
            })
            .collect();
        o
    }

    #[test]
    fn status_fields_are_read_as_the_kernel_prints_them() {
        let o = parse_status(STATUS);
        assert_eq!(o.no_new_privs, Some(1));
        assert_eq!(o.seccomp_mode, Some(2));
        assert_eq!(o.seccomp_filters, Some(5));
        assert_eq!(
            [o.cap_eff, o.cap_prm, o.cap_inh, o.cap_bnd, o.cap_amb],
            [Some(0); 5]
        );
        let root = parse_status("CapEff:\t000001ffffffffff\nSeccomp:\t0\n");
        assert_eq!(root.cap_eff, Some(0x1ff_ffff_ffff));
        assert_eq!(root.seccomp_mode, Some(0));
        assert_eq!(root.no_new_privs, None);
    }

    #[test]
    fn net_dev_lists_the_interfaces_and_refuses_another_format() {
        assert_eq!(parse_net_dev(NET_DEV), Some(vec!["lo".to_string()]));
        let host = format!("{NET_DEV}  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
        assert_eq!(
            parse_net_dev(&host),
            Some(vec!["lo".to_string(), "eth0".to_string()])
        );
        let empty: String = NET_DEV.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_net_dev(&empty), Some(vec![]));
        assert_eq!(parse_net_dev(""), None);
        assert_eq!(parse_net_dev("lo: 1 2\n"), None);
        assert_eq!(parse_net_dev(&format!("{NET_DEV}garbage\n")), None);
    }

    #[test]
    fn namespace_links_parse_only_for_their_own_type() {
        assert_eq!(parse_ns_link("net", "net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("net", "mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net", "net:4026531840"), None);
        assert_eq!(parse_ns_link("pid", "pid:[x]"), None);
    }

    #[test]
    fn a_sealed_step_is_hermetic() {
        assert!(sealed().hermetic());
        // No interface at all is as closed as loopback alone.
        let none = Observed {
            interfaces: Some(vec![]),
            ..sealed()
        };
        assert!(none.hermetic());
    }

    #[test]
    fn each_missing_seal_makes_the_step_not_hermetic() {
        type Break = Box<dyn Fn(&mut Observed)>;
        let breaks: Vec<(&str, Break)> = vec![
            (
                "a host interface",
                Box::new(|o| o.interfaces = Some(vec!["lo".into(), "eth0".into()])),
            ),
            ("interfaces unknown", Box::new(|o| o.interfaces = None)),
            ("seccomp off", Box::new(|o| o.seccomp_mode = Some(0))),
            (
                "seccomp strict, not a filter",
                Box::new(|o| o.seccomp_mode = Some(1)),
            ),
            ("seccomp unknown", Box::new(|o| o.seccomp_mode = None)),
            ("no_new_privs off", Box::new(|o| o.no_new_privs = Some(0))),
            ("no_new_privs unknown", Box::new(|o| o.no_new_privs = None)),
            (
                "an effective capability",
                Box::new(|o| o.cap_eff = Some(1 << 21)),
            ),
            ("effective unknown", Box::new(|o| o.cap_eff = None)),
            ("a permitted capability", Box::new(|o| o.cap_prm = Some(1))),
            ("permitted unknown", Box::new(|o| o.cap_prm = None)),
            (
                "the helper's network namespace",
                Box::new(|o| {
                    let n = o.namespaces.iter_mut().find(|n| n.name == "net").unwrap();
                    n.step_inode = n.helper_inode;
                }),
            ),
            (
                "the helper's inode unknown",
                Box::new(|o| {
                    let n = o.namespaces.iter_mut().find(|n| n.name == "net").unwrap();
                    n.helper_inode = None;
                }),
            ),
            ("no namespace observed", Box::new(|o| o.namespaces.clear())),
        ];
        for (what, f) in breaks {
            let mut o = sealed();
            f(&mut o);
            assert!(!o.hermetic(), "hermetic with {what}");
        }
        assert!(!Observed::default().hermetic());
    }

    #[test]
    fn an_observation_reads_the_steps_proc_and_the_helper_adds_its_own() {
        use crate::sys::fake::{Call, RecordingSyscalls};
        let mut sys = RecordingSyscalls::default();
        sys.files.insert("/proc/self/status".into(), STATUS.into());
        sys.files
            .insert("/proc/self/net/dev".into(), NET_DEV.into());
        for (i, n) in OBSERVED_NAMESPACES.iter().enumerate() {
            sys.links.insert(
                Path::new("/proc/self/ns").join(n),
                format!("{n}:[{}]", 4026532000 + i as u64).into(),
            );
        }
        let mut o = observe_step(&sys);
        assert!(o.namespaces.iter().all(|n| n.helper_inode.is_none()));
        assert!(!o.hermetic(), "hermetic before the helper compared");
        let c = sys.calls();
        assert_eq!(c[0], Call::ReadSmallFile("/proc/self/status".into()));
        assert_eq!(c[1], Call::ReadSmallFile("/proc/self/net/dev".into()));
        assert_eq!(c.len(), 2 + OBSERVED_NAMESPACES.len());
        // The same inodes on the helper's side: nothing is distinct.
        add_helper_namespaces(&sys, &mut o);
        assert!(!o.hermetic());
        // The helper's own, different, namespaces.
        for (i, n) in OBSERVED_NAMESPACES.iter().enumerate() {
            sys.links.insert(
                Path::new("/proc/self/ns").join(n),
                format!("{n}:[{}]", 4026531830 + i as u64).into(),
            );
        }
        add_helper_namespaces(&sys, &mut o);
        assert!(o.namespaces.iter().all(|n| n.distinct()));
        assert!(o.hermetic());
        // An unreadable /proc: nothing known, not hermetic.
        let blind = RecordingSyscalls {
            fail_on: Some("Read".into()),
            ..Default::default()
        };
        let o = observe_step(&blind);
        assert_eq!(o.seccomp_mode, None);
        assert_eq!(o.interfaces, None);
        assert!(!o.hermetic());
    }
}
