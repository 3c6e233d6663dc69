//! `stream_codec`: the incremental XML stream reader under arbitrary bytes cut into arbitrary
//! reads. It checks that the reader never panics; that once it has returned an error every later
//! call returns that same error, whatever is fed after it; that the bytes read in one piece and
//! the same bytes read in the fuzzer's pieces give the same frames (stream header, stanzas with
//! their raw text, close) and both end in an error or neither does; and that, on a stream opened
//! by a real header, the raw text of every element parses again on its own to an element of
//! the same name and namespace.
//!
//! The limits are small (1 KiB per stanza, 16 levels) so that inputs of a few KiB reach them.
//!
//! Input layout: byte 0 chooses the header put before the data (none, the server's, the
//! component's own); bytes 1 and 2 seed the sizes of the reads; the rest is the stream.
#![no_main]

use component_http::xmpp::codec::{CodecError, Frame, ReadLimits, StreamReader, parse_stanza};
use component_http::xmpp::write::stream_header;
use libfuzzer_sys::fuzz_target;

const LIMITS: ReadLimits = ReadLimits {
    max_stanza_bytes: 1024,
    max_depth: 16,
};

const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' from='bot.localhost' id='abc'>";

/// A frame reduced to what the two readings must agree on.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Open {
        id: Option<String>,
        from: Option<String>,
        version: Option<String>,
    },
    Element {
        raw: String,
        name: String,
        ns: String,
    },
    Close,
}

impl From<Frame> for Seen {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Open(header) => Seen::Open {
                id: header.id,
                from: header.from,
                version: header.version,
            },
            Frame::Element(read) => Seen::Element {
                name: read.element.name().to_owned(),
                ns: read.element.ns(),
                raw: read.raw,
            },
            Frame::Close => Seen::Close,
        }
    }
}

/// What a reading produced: its frames, and the error that ended it, if any.
#[derive(Debug)]
struct Reading {
    frames: Vec<Seen>,
    error: Option<CodecError>,
}

/// Drains the reader; after an error, checks that the error sticks. `budget` bounds the frames
/// one drain may yield (each frame needs at least one byte of input).
fn drain(reader: &mut StreamReader, reading: &mut Reading, budget: usize) {
    if let Some(error) = &reading.error {
        let again = reader.next_frame();
        assert_eq!(
            again.as_ref().err(),
            Some(error),
            "a call after an error must repeat it, got {again:?}"
        );
        return;
    }
    for _ in 0..=budget {
        match reader.next_frame() {
            Ok(Some(frame)) => reading.frames.push(frame.into()),
            Ok(None) => return,
            Err(error) => {
                let again = reader.next_frame();
                assert_eq!(
                    again.as_ref().err(),
                    Some(&error),
                    "the call after an error must repeat it, got {again:?}"
                );
                reading.error = Some(error);
                return;
            }
        }
    }
    panic!("the reader yields frames without end");
}

/// Sizes of successive reads, from a small xorshift generator seeded by the input.
struct Cuts {
    state: u32,
    max: usize,
}

impl Cuts {
    fn new(seed: u16) -> Self {
        // The top bits choose how fine the cutting is: byte by byte up to large reads.
        let max = match seed >> 13 {
            0 => 1,
            1 => 2,
            2 => 3,
            3 => 8,
            4 => 17,
            5 => 64,
            6 => 512,
            _ => 4096,
        };
        Self {
            state: u32::from(seed).wrapping_mul(2_654_435_761) | 1,
            max,
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + (self.state as usize) % self.max
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let own = stream_header("bot.localhost");
    let header: &[u8] = match data[0] % 4 {
        0 => b"",
        1 | 3 => SERVER_HEADER.as_bytes(),
        _ => own.as_bytes(),
    };
    let known_root = !header.is_empty();
    let seed = u16::from_be_bytes([data[1], data[2]]);
    let input = [header, &data[3..]].concat();
    let budget = input.len() + 1;

    // One piece.
    let mut whole = StreamReader::new(LIMITS);
    let mut once = Reading {
        frames: Vec::new(),
        error: None,
    };
    whole.feed(&input);
    drain(&mut whole, &mut once, budget);
    // An error is final: more bytes, even a well-formed stanza, change nothing.
    if once.error.is_some() {
        whole.feed(b"<message to='a@b' from='c@d'/>");
        drain(&mut whole, &mut once, budget);
    }

    // The fuzzer's pieces.
    let mut pieces = StreamReader::new(LIMITS);
    let mut cut = Reading {
        frames: Vec::new(),
        error: None,
    };
    let mut cuts = Cuts::new(seed);
    let mut rest = input.as_slice();
    while !rest.is_empty() {
        let n = cuts.next().min(rest.len());
        pieces.feed(&rest[..n]);
        rest = &rest[n..];
        drain(&mut pieces, &mut cut, budget);
    }
    drain(&mut pieces, &mut cut, budget);

    assert_eq!(
        once.frames, cut.frames,
        "one read and several reads give different frames (errors: {:?} / {:?})",
        once.error, cut.error
    );
    assert_eq!(
        once.error.is_some(),
        cut.error.is_some(),
        "one read and several reads disagree on failing: {:?} / {:?}",
        once.error,
        cut.error
    );

    // The raw text stands on its own, within the same limits, when the stream's root is the
    // real one (a root of the fuzzer's own may declare prefixes the raw text then relies on).
    if known_root {
        for frame in &once.frames {
            if let Seen::Element { raw, name, ns } = frame {
                let again = parse_stanza(raw, LIMITS)
                    .unwrap_or_else(|e| panic!("raw {raw:?} does not parse again: {e}"));
                assert_eq!(again.element.name(), name, "raw {raw:?}");
                assert_eq!(&again.element.ns(), ns, "raw {raw:?}");
                assert_eq!(&again.raw, raw.trim(), "raw {raw:?}");
            }
        }
    }
});
