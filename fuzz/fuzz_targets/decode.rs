//! Fuzzes the frame decoder with arbitrary bytes.
//!
//! The first two input bytes choose the maximum payload and the chunk size;
//! the rest is the byte stream. Checks: no panic; every frame decoded
//! re-encodes to exactly the bytes it came from; feeding the stream in chunks
//! yields the same frames and the same error as feeding it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{DecodeError, Decoder};

fuzz_target!(|data: &[u8]| {
    let Some((&[max, chunk], wire)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = u32::from(max) * 64;
    let chunk = usize::from(chunk).max(1);

    let mut whole = Vec::new();
    let mut decoder = Decoder::new(max);
    let mut input = wire;
    let whole_error: Option<DecodeError> = loop {
        let before = input;
        match decoder.decode(&mut input) {
            Ok(Some(frame)) => {
                let used = before.len() - input.len();
                let start = whole.len();
                frame.encode_to_vec(&mut whole).expect("a decoded frame encodes");
                assert_eq!(&whole[start..], &before[..used], "re-encoding differs");
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };

    let mut chunked = Vec::new();
    let mut decoder = Decoder::new(max);
    let mut chunked_error = None;
    'chunks: for mut part in wire.chunks(chunk) {
        loop {
            match decoder.decode(&mut part) {
                Ok(Some(frame)) => {
                    frame.encode_to_vec(&mut chunked).expect("a decoded frame encodes");
                }
                Ok(None) => break,
                Err(e) => {
                    chunked_error = Some(e);
                    break 'chunks;
                }
            }
        }
        assert!(decoder.buffered_capacity() <= max as usize + Decoder::CARRY_RECORD_BYTES);
    }
    assert_eq!(whole, chunked, "chunking changed the frames");
    assert_eq!(whole_error, chunked_error, "chunking changed the error");
});
