// Run with: cargo bench --bench ec2_decode
//
// The cost of reading the fleet through the AWS SDK, apart from any
// emulator: a loopback HTTP server thread answers DescribeInstances with a
// saved page of 1,000 instances (built from benches/data/
// describe-instances-item.xml, one instance as moto 5.0.28 returns it), and
// fleetdns's EC2 source fetches it through the SDK: HTTP on loopback, XML
// decoding, conversion to `Instance`. Results: benches/results/.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fleetdns::inventory::ec2::{Ec2Settings, Ec2Source};
use fleetdns::inventory::packed::{Packed, Spool};
use fleetdns::inventory::Source;

/// A DescribeInstancesResponse with `n` instances, one reservation each.
fn page(n: usize) -> String {
    let item = include_str!("data/describe-instances-item.xml").trim();
    let mut body = String::from(
        r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>bench</requestId><reservationSet>"#,
    );
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
        let instance = item
            .replace("{ID}", &format!("i-{i:017x}"))
            .replace("{IPDASH}", &ip.replace('.', "-"))
            .replace("{IP}", &ip)
            .replace("{N}", &i.to_string());
        body.push_str(&format!(
            "<item><reservationId>r-{i:017x}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet>{instance}</instancesSet></item>"
        ));
    }
    body.push_str("</reservationSet></DescribeInstancesResponse>");
    body
}

/// Serves `body` to every HTTP request on a loopback port; returns the URL.
fn serve(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    // Read the headers, then the body by Content-Length.
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut request = vec![0u8; length];
                    if reader.read_exact(&mut request).is_err() {
                        return;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let stream = reader.get_mut();
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn bench(c: &mut Criterion) {
    // Dummy credentials and no instance metadata: nothing leaves loopback.
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    let body = page(1000);
    let size = body.len();
    let url = serve(body);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settings = Ec2Settings {
        regions: vec!["us-east-1".to_string()],
        endpoint_url: Some(url),
        filters: BTreeMap::new(),
        accounts: vec![],
        page_size: 1000,
        call_timeout: Duration::from_secs(30),
        max_attempts: 1,
        events: None,
    };
    let source = runtime.block_on(Ec2Source::new(&settings)).unwrap();
    let spool = Spool::memory();
    let fetched = runtime.block_on(source.fetch(&spool));
    let count = fetched[0].result.as_ref().map(Packed::len).unwrap();
    assert_eq!(count, 1000, "the saved page decodes to 1,000 instances");
    eprintln!("page of 1,000 instances: {size} bytes of XML");

    let mut group = c.benchmark_group("ec2");
    group.sample_size(20);
    group.bench_function("fetch and decode a 1,000-instance page", |b| {
        b.iter(|| runtime.block_on(source.fetch(&spool)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
