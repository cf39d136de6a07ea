// Run with: cargo bench --bench snapshot
//
// The pure core at fleet scale: naming hostile tag values, building a
// snapshot of 100,000 instances (from `Instance`s and from their packed
// form), comparing two, the IXFR difference of two and the AXFR of one,
// looking a name up in it (the general
// path's lookup and the UDP fast path's whole answer), and rendering and
// merging a hosts block of 100,000 lines. Results are kept in
// benches/results/ with date, machine and command.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use fleetdns::dns::xfr::{Answer, Diff, Primary, TransferRequest};
use fleetdns::hosts::{merge, render_block, render_lines};
use fleetdns::inventory::packed::Packed;
use fleetdns::inventory::{Instance, Tags};
use fleetdns::naming::{sanitize, Naming};
use fleetdns::snapshot::{Lookup, Snapshot};
use hickory_proto::rr::{LowerName, Name};

// The binary's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

fn instances(n: u32) -> Vec<Instance> {
    (0..n)
        .map(|i| {
            common::instance(
                i,
                Tags::from([
                    ("Name".to_string(), format!("Web Server {i}")),
                    ("Env".to_string(), "prod".to_string()),
                ]),
            )
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
    // Issue 17: two templates, an alias tag and a group rule (by Role: 50
    // groups of 1,000, each member with its ordinal) on the same fleet,
    // with a Role and Env on every other instance and two aliases on each
    // tenth.
    let rich_fleet: Vec<Instance> = fleet
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let mut instance = instance.clone();
            let mut tags: Vec<(String, String)> = instance
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if i % 2 == 0 {
                tags.push(("Role".into(), format!("role{}", i % 50)));
                tags.push(("Env".into(), format!("env-{i}")));
            }
            if i % 10 == 0 {
                tags.push(("dns-aliases".into(), format!("api-{i}, www-{i}")));
            }
            instance.tags = tags.into_iter().collect();
            instance
        })
        .collect();
    let rich_naming = common::rich_naming();
    let rich_packed = Packed::from_instances(&rich_fleet);
    group.bench_function(
        "build 100k packed instances, 2 templates + alias tag + group rule",
        |b| b.iter(|| Snapshot::build_packed([black_box(&rich_packed)], &rich_naming, &zone)),
    );
    // Static records (issue 17): 1,000 of them, 100 over fleet names, 50
    // CNAMEs into the fleet, 50 SRV under one empty non-terminal.
    let mut static_text = String::from("$TTL 300\n");
    for i in 0..800u32 {
        static_text.push_str(&format!("static-{i} A 10.99.{}.{}\n", i / 256, i % 256));
    }
    for i in 0..100u32 {
        static_text.push_str(&format!("web-server-{} A 10.98.0.{}\n", i * 997, i));
    }
    for i in 0..50u32 {
        static_text.push_str(&format!("alias-{i} CNAME web-server-{i}\n"));
        static_text.push_str(&format!("_svc{i}._tcp SRV 0 5 80 static-{i}\n"));
    }
    group.bench_function("parse 1,000 static records", |b| {
        b.iter(|| fleetdns::statics::parse(black_box(&static_text), &zone, 30).expect("parses"))
    });
    let statics =
        std::sync::Arc::new(fleetdns::statics::parse(&static_text, &zone, 30).expect("parses"));
    let static_naming = naming.clone().with_statics(statics);
    group.bench_function("build 100k packed instances + 1,000 static records", |b| {
        b.iter(|| Snapshot::build_packed([black_box(&packed)], &static_naming, &zone))
    });
    let with_statics = Snapshot::build(&fleet, &static_naming, &zone);
    let snapshot = Snapshot::build(&fleet, &naming, &zone);
    let same = Snapshot::build_packed([&packed], &naming, &zone).expect("builds");
    group.bench_function("compare two 100k-instance snapshots", |b| {
        b.iter(|| black_box(&snapshot).differs_from(black_box(&same)))
    });

    // IXFR: the journal's difference when 1% of the instances changed
    // (500 renamed, 500 with a new address), and the size of a journal of
    // 100 such differences.
    let settings = fleetdns::config::read_config("", "bench")
        .expect("default config")
        .validate(&fleetdns::config::Overrides::default())
        .expect("valid");
    let mut changed_fleet = fleet.clone();
    for (i, instance) in changed_fleet.iter_mut().enumerate().step_by(100) {
        if i % 200 == 0 {
            instance.tags = Tags::from([("Name".to_string(), format!("renamed {i}"))]);
        } else {
            instance.private_ipv4 = vec![Ipv4Addr::from(0x0b00_0000 + i as u32)];
        }
    }
    let changed = Snapshot::build(&changed_fleet, &naming, &zone).with_serial_after(&snapshot);
    group.bench_function("diff two 100k-instance snapshots, 1% changed", |b| {
        b.iter(|| Diff::between(black_box(&snapshot), black_box(&changed), &settings.zone))
    });
    let diff = Diff::between(&snapshot, &changed, &settings.zone);
    let (removed, added) = diff.counts();
    eprintln!(
        "journal: one 1% difference = {removed} records removed, {added} added, {} bytes; 100 of them = {:.1} MiB",
        diff.bytes(),
        (diff.bytes() * 100) as f64 / (1 << 20) as f64
    );

    // AXFR: rendering and encoding every message of the 100k-instance
    // zone (the server's share of a transfer, without the socket).
    let store = fleetdns::snapshot::new_store();
    store.store(Some(std::sync::Arc::new(Snapshot::build(
        &fleet, &naming, &zone,
    ))));
    let open = fleetdns::config::read_config(
        "[transfer]\nallow = [{ from = \"127.0.0.0/8\" }]\n",
        "bench",
    )
    .expect("config")
    .validate(&fleetdns::config::Overrides::default())
    .expect("valid");
    let primary = Primary::new(store, settings.zone.clone(), &open.transfer);
    let question = b"\x05fleet\x08internal\x00\x00\xfc\x00\x01".to_vec();
    group.bench_function("AXFR of 100k instances into messages", |b| {
        b.iter(|| {
            let request = TransferRequest {
                id: 1,
                recursion_desired: false,
                opcode: 0,
                question: &question,
                name: &zone,
                qtype: hickory_proto::rr::RecordType::AXFR,
                authorities: &[],
                source: "127.0.0.1".parse().expect("an address"),
                protocol: hickory_server::net::xfer::Protocol::Tcp,
                signed: None,
            };
            let Answer::Stream(mut stream) = primary.answer(&request) else {
                panic!("a stream")
            };
            let mut bytes = 0;
            while let Some(m) = stream.next_message() {
                bytes += m.len();
            }
            bytes
        })
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

    // The same, in a zone with static records: the fast path also asks
    // whether the name is static.
    c.bench_function(
        "fast-path answer in 100k-instance snapshot with 1,000 static records",
        |b| {
            b.iter(|| {
                fleetdns::dns::fast::answer(
                    &with_statics,
                    &fast_zone,
                    black_box(&query),
                    &mut reply,
                )
                .is_some()
            })
        },
    );

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
