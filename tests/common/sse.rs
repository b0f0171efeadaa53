//! A Server-Sent Events client over a raw socket, for the event tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::server::Server;

/// One SSE stream over a raw HTTP/1.0 connection (the body is the bytes
/// up to the close: no chunking to undo).
pub struct Sse {
    /// The body: as sent, or decoded when the server sent gzip.
    pub reader: Box<dyn BufRead>,
    pub status: u16,
    pub head: String,
}

/// A frame: an event, or a comment line.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event {
        id: Option<u64>,
        event: String,
        data: serde_json::Value,
    },
    Comment(String),
}

impl Sse {
    pub fn open(s: &Server, path: &str, headers: &[&str]) -> Sse {
        let mut stream = TcpStream::connect(s.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n");
        for h in headers {
            req += h;
            req += "\r\n";
        }
        req += "\r\n";
        stream.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head += &line.to_ascii_lowercase();
        }
        let status = head[9..12].parse().unwrap();
        let reader: Box<dyn BufRead> = match head.contains("content-encoding: gzip") {
            true => Box::new(BufReader::new(flate2::read::GzDecoder::new(reader))),
            false => Box::new(reader),
        };
        Sse {
            reader,
            status,
            head,
        }
    }

    /// The next frame (blank-line separated), waiting up to 10 s.
    pub fn next(&mut self) -> Frame {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("a frame within 10 s");
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches('\n');
            if let Some(comment) = line.strip_prefix(": ") {
                // A comment stands alone (followed by its blank line).
                let mut blank = String::new();
                self.reader.read_line(&mut blank).unwrap();
                return Frame::Comment(comment.to_owned());
            }
            if line.is_empty() {
                return Frame::Event {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let (field, value) = line.split_once(": ").unwrap();
            match field {
                "id" => id = Some(value.parse().unwrap()),
                "event" => event = value.to_owned(),
                "data" => data = value.to_owned(),
                other => panic!("unexpected field {other}"),
            }
        }
    }

    /// The next event, skipping comments.
    pub fn event(&mut self) -> (u64, String, serde_json::Value) {
        loop {
            if let Frame::Event { id, event, data } = self.next() {
                return (id.expect("every event has an id"), event, data);
            }
        }
    }
}
