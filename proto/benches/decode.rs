//! Decoder throughput: frames fed in 64 KiB chunks, as a recv of a busy
//! connection delivers them.
//!
//! Run: `cargo bench -p ringroom-proto --bench decode`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proto::{Decoder, Fragment, Frame, Publish, Room};

const CHUNK: usize = 64 * 1024;
const STREAM_BYTES: usize = 8 * 1024 * 1024;

/// Repeats `frame` until the stream holds about `STREAM_BYTES`.
fn stream_of(frame: Frame<'_>) -> (Vec<u8>, u64) {
    let mut wire = Vec::with_capacity(STREAM_BYTES + frame.encoded_len());
    let mut frames = 0;
    while wire.len() < STREAM_BYTES {
        frame.encode_to_vec(&mut wire).unwrap();
        frames += 1;
    }
    (wire, frames)
}

/// Decodes the whole stream chunk by chunk; returns frames and payload bytes seen.
fn decode_all(decoder: &mut Decoder, wire: &[u8]) -> (u64, u64) {
    let (mut frames, mut bytes) = (0u64, 0u64);
    for mut chunk in wire.chunks(CHUNK) {
        while let Some(frame) = decoder.decode(&mut chunk).unwrap() {
            frames += 1;
            if let Frame::Publish(p) = frame {
                bytes += p.body.len() as u64;
            }
        }
    }
    (frames, bytes)
}

fn publish(body: &[u8]) -> Frame<'_> {
    Frame::Publish(Publish {
        room: Room::new("r").unwrap(),
        body,
        echo: false,
        fragment: Fragment::default(),
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_64KiB_chunks");
    group.measurement_time(Duration::from_secs(5));

    let cases = [
        ("ping_16B", Frame::Ping(&[7; 16]), true),
        // room_len + 1-byte room + 14-byte body = 16-byte payload.
        ("publish_16B", publish(&[7; 14]), true),
        ("publish_4KiB", publish(&[7; 4096 - 2]), false),
    ];
    for (name, frame, count_frames) in cases {
        let (wire, frames) = stream_of(frame);
        group.throughput(if count_frames {
            Throughput::Elements(frames)
        } else {
            Throughput::Bytes(wire.len() as u64)
        });
        let mut decoder = Decoder::new(proto::DEFAULT_MAX_PAYLOAD);
        group.bench_function(name, |b| {
            b.iter(|| black_box(decode_all(&mut decoder, black_box(&wire))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
