//! Who may ask what (`[access]`): clients from distinct loopback source
//! addresses (127.0.0.1, .2, .3), forwarding to a real dnsmasq upstream.

use std::net::SocketAddr;
use std::process::Command;

use crate::harness::*;

/// `dig` from source address `from` to `server`, with `args`.
fn dig_from(from: &str, server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["-b", from, &format!("@{}", server.ip())])
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn queries_outside_allow_query_are_refused_and_only_allow_recursion_is_forwarded() {
    let upstream = Dnsmasq::start();
    let dir = tempdir();
    let d = start_with_config(
        dir.path(),
        &format!(
            "upstreams = [\"{}\"]\n[access]\nallow_query = [\"127.0.0.1\", \"127.0.0.2/32\"]\nallow_recursion = [\"127.0.0.1/32\"]\n",
            upstream.addr
        ),
    );
    // 127.0.0.1 may do everything
    let out = dig_from("127.0.0.1", d.udp, &["web-1.fleet.internal"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("10.20.1.11"),
        "{out}"
    );
    let out = dig_from("127.0.0.1", d.udp, &["www.upstream.test"]);
    assert!(out.contains("192.0.2.7"), "forwarded for 127.0.0.1:\n{out}");

    // 127.0.0.2 gets the zone (over the UDP fast path, the general path
    // and TCP) but no forwarding: REFUSED, not an open resolver
    for args in [
        vec!["web-1.fleet.internal"],
        vec!["TXT", "web-1.fleet.internal"],
        vec!["+tcp", "web-1.fleet.internal"],
        vec!["-x", "10.20.3.32"],
    ] {
        let out = dig_from("127.0.0.2", d.udp, &args);
        assert!(
            out.contains("status: NOERROR") && out.contains("flags: qr aa"),
            "{args:?}: {out}"
        );
    }
    let out = dig_from("127.0.0.2", d.udp, &["www.upstream.test"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    assert!(!out.contains("192.0.2.7"), "{out}");

    // 127.0.0.3 is outside allow_query: REFUSED for zone names too, on
    // the fast path as on every other
    for args in [
        vec!["web-1.fleet.internal"],
        vec!["AAAA", "nope.fleet.internal"],
        vec!["+tcp", "web-1.fleet.internal"],
        vec!["SOA", "fleet.internal"],
        vec!["www.upstream.test"],
    ] {
        let out = dig_from("127.0.0.3", d.udp, &args);
        assert!(out.contains("status: REFUSED"), "{args:?}: {out}");
        assert!(!out.contains("10.20.1.11"), "{out}");
    }
}

/// `[access]` and `[rrl]` settings that cannot work.
#[test]
fn access_lists_that_cannot_work_are_config_errors_naming_the_option() {
    let dir = tempdir();
    for (toml, want) in [
        (
            "[access]\nallow_query = []\n",
            "invalid access.allow_query: an empty list",
        ),
        (
            "[access]\nallow_recursion = [\"10.0.0.0/40\"]\n",
            "invalid access.allow_recursion: \"10.0.0.0/40\": the prefix length must be 0 to 32",
        ),
        (
            "[access]\nallow_query = [\"ten.0.0.0/8\"]\n",
            "invalid access.allow_query: \"ten.0.0.0/8\" is not an address",
        ),
        (
            "[rrl]\nresponses_per_second = 0\n",
            "invalid rrl.responses_per_second: 0 is out of range: 1 to 1000000",
        ),
        (
            "[rrl]\nresponses_per_second = 50\nipv4_prefix = 33\n",
            "invalid rrl.ipv4_prefix: 33 is out of range: 1 to 32",
        ),
        (
            "[rrl]\nresponses_per_second = 50\nipv6_prefix = 0\n",
            "invalid rrl.ipv6_prefix: 0 is out of range: 1 to 128",
        ),
        (
            "[rrl]\nresponses_per_second = 50\nexempt = [\"10.0.0.0/8\", \"10.1/16\"]\n",
            "invalid rrl.exempt: \"10.1/16\" is not an address",
        ),
        ("[rrl]\nslip = 2\n", "responses_per_second"),
    ] {
        let config = dir.path().join("f.toml");
        std::fs::write(&config, toml).unwrap();
        let out = run(&[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert_eq!(out.status.code(), Some(2), "{toml}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{toml}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}
