//! Integration tests: the real `fleetdns` binary on loopback sockets,
//! queried with real clients (`dig` from bind9-dnsutils, and hickory-proto's
//! encoder/decoder over plain sockets, which also checks that no bytes
//! trail a reply). Forwarding is tested against a real dnsmasq that the
//! test starts on loopback; EC2 is moto in server mode, behind a loopback
//! proxy that injects faults. Nothing leaves 127.0.0.0/8.

mod harness;
mod moto;

mod access;
mod central;
mod cli;
mod conformance;
mod deploy;
mod dns;
mod ec2;
mod events;
mod forward;
mod hosts;
mod limits;
mod naming;
mod operator;
mod refresh;
mod resilience;
mod secondaries;
mod xfr;
