//! Any bytes as an existing hosts file, merged with a block: no panic;
//! every byte outside the old block survives, in place; the new block is
//! in it exactly once; merging again changes nothing; a file whose
//! markers are wrong is refused with a one-line reason.
#![no_main]

use fleetdns::hosts::{merge, render_block};
use libfuzzer_sys::fuzz_target;

/// The block's lines, as the export renders them.
fn lines() -> Vec<String> {
    vec![
        "10.20.1.11 web-1.fleet.internal web-1".to_string(),
        "10.20.1.21 api.fleet.internal api".to_string(),
    ]
}

/// Offsets where each line starts, with its content (no `\n`, no `\r`).
fn line_spans(bytes: &[u8]) -> Vec<(usize, usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i + 1, &bytes[start..i]));
            start = i + 1;
        }
    }
    if start < bytes.len() {
        out.push((start, bytes.len(), &bytes[start..]));
    }
    out
}

fn trimmed(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line).trim_ascii()
}

fuzz_target!(|existing: &[u8]| {
    let lines = lines();
    let merged = match merge(existing, &lines) {
        Ok(m) => m,
        Err(reason) => {
            assert!(!reason.contains('\n'), "{reason:?}");
            return;
        }
    };
    let out = &merged.bytes;
    let spans = line_spans(existing);
    let begin = spans
        .iter()
        .find(|s| trimmed(s.2).starts_with(b"# BEGIN fleetdns"));
    let end = spans.iter().find(|s| {
        let t = trimmed(s.2);
        t == b"# END fleetdns" || t.starts_with(b"# END fleetdns ")
    });
    // The bytes before and after the old block (the whole file if none).
    let (before, after) = match (begin, end) {
        (Some(b), Some(e)) => (&existing[..b.0], &existing[e.1..]),
        (None, None) => (existing, &existing[existing.len()..]),
        _ => panic!("a file with one marker was merged"),
    };
    assert!(
        out.starts_with(before),
        "the bytes before the block changed"
    );
    assert!(out.ends_with(after), "the bytes after the block changed");
    let middle = &out[before.len()..out.len() - after.len()];
    let eol = if middle.windows(2).any(|w| w == b"\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    // A last line without its line ending gets one before a new block: the
    // file's, or only the LF where the line stops after a CR.
    let separator = match (begin, before.last()) {
        (None, Some(b'\r')) => "\n",
        (None, Some(&last)) if last != b'\n' => eol,
        _ => "",
    };
    let middle = middle
        .strip_prefix(separator.as_bytes())
        .expect("a line ending before the block");
    let block = render_block(&lines, eol);
    assert!(
        block.as_bytes().starts_with(middle) && block.len() - middle.len() <= eol.len(),
        "between the kept bytes stands something else than the block: {:?}",
        String::from_utf8_lossy(middle)
    );
    let again = merge(out, &lines).expect("a merged file merges again");
    assert_eq!(&again.bytes, out, "merging twice changed the file");
});
