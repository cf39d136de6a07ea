// Run with: cargo bench --bench snapshot
//
// The pure core at fleet scale: naming hostile tag values, building a
// snapshot of 100,000 instances (from `Instance`s and from their packed
// form) and comparing two, looking a name up in it (the general
// path's lookup and the UDP fast path's whole answer), and rendering and
// merging a hosts block of 100,000 lines. Results are kept in
// benches/results/ with date, machine and command.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use fleetdns::hosts::{merge, render_block, render_lines};
use fleetdns::inventory::packed::Packed;
use fleetdns::inventory::{Instance, Tags};
use fleetdns::naming::{sanitize, Naming};
use fleetdns::snapshot::{Lookup, Snapshot};
use hickory_proto::rr::{LowerName, Name};

// The binary's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn instances(n: u32) -> Vec<Instance> {
    (0..n)
        .map(|i| Instance {
            id: format!("i-{i:017x}"),
            state: "running".to_string(),
            private_ipv4: vec![Ipv4Addr::from(0x0a00_0000 + i)],
            ipv6: vec![],
            tags: Tags::from([
                ("Name".to_string(), format!("Web Server {i}")),
                ("Env".to_string(), "prod".to_string()),
            ]),
            security_groups: vec!["web".to_string()],
            launch_time: None,
            region: Some("us-east-1".to_string()),
            vpc_id: None,
            availability_zone: Some("us-east-1a".to_string()),
            instance_type: Some("t3.micro".to_string()),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let hostile = [
        "web-1",
        "Web Server 3",
        "evil\nname # injected 127.0.0.1 localhost",
        "Ünïcode Büro",
        "---",
        &"a".repeat(300),
        &"ab.".repeat(100),
    ];
    c.bench_function("sanitize 7 hostile values", |b| {
        b.iter(|| {
            for v in &hostile {
                let _ = black_box(sanitize(black_box(v), 238));
            }
        })
    });

    let zone = Name::from_ascii("fleet.internal.").unwrap();
    let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
    let fleet = instances(100_000);
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("build 100k instances", |b| {
        b.iter(|| Snapshot::build(black_box(&fleet), &naming, &zone))
    });
    // The daemon's path: the instances decoded one by one from their
    // packed form (in memory here; the daemon reads it from a file).
    let packed = Packed::from_instances(&fleet);
    group.bench_function("build 100k packed instances", |b| {
        b.iter(|| Snapshot::build_packed([black_box(&packed)], &naming, &zone))
    });
    let snapshot = Snapshot::build(&fleet, &naming, &zone);
    let same = Snapshot::build_packed([&packed], &naming, &zone).expect("builds");
    group.bench_function("compare two 100k-instance snapshots", |b| {
        b.iter(|| black_box(&snapshot).differs_from(black_box(&same)))
    });
    group.finish();

    let name = LowerName::new(&Name::from_ascii("web-server-54321.fleet.internal.").unwrap());
    c.bench_function("lookup in 100k-instance snapshot", |b| {
        b.iter(|| matches!(snapshot.lookup(black_box(&name)), Lookup::Name(_)))
    });

    // A query as dig sends it (RD, AD, EDNS 1232), mixed case.
    let mut query = vec![0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["Web-Server-54321", "fleet", "internal"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut reply = Vec::with_capacity(1232);
    let settings = fleetdns::config::read_config("", "bench")
        .expect("default config")
        .validate(&fleetdns::config::Overrides::default())
        .expect("valid");
    let fast_zone = fleetdns::dns::fast::FastZone::new(&settings.zone);
    c.bench_function("fast-path answer in 100k-instance snapshot", |b| {
        b.iter(|| {
            fleetdns::dns::fast::answer(&snapshot, &fast_zone, black_box(&query), &mut reply)
                .is_some()
        })
    });

    let mut group = c.benchmark_group("hosts");
    group.sample_size(10);
    group.bench_function("render 100k lines", |b| {
        b.iter(|| render_lines(black_box(&snapshot)))
    });
    let lines = render_lines(&snapshot);
    let mut existing = b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n".to_vec();
    existing.extend_from_slice(render_block(&lines[..lines.len() - 1], "\n").as_bytes());
    existing.extend_from_slice(b"# after the block\n");
    group.bench_function("merge 100k lines into a file", |b| {
        b.iter(|| merge(black_box(&existing), black_box(&lines)).map(|m| m.bytes.len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
