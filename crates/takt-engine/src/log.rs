//! A job's log on disk: output interleaved in arrival order, every line stamped with its UTC
//! arrival time, capped at a size limit with a clear note when cut.

use parking_lot::Mutex;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use takt_exec::LogSink;
use takt_model::{OffsetDateTime, timefmt};

/// The default cap on one job's log.
pub const DEFAULT_LIMIT: u64 = 64 * 1024 * 1024;

pub struct FileLog {
    out: BufWriter<File>,
    limit: u64,
    written: u64,
    dropped: u64,
    cut: bool,
    at_line_start: bool,
    error: bool,
    /// Reused buffer for assembling stamped output.
    scratch: Vec<u8>,
    /// The last line seen, for live displays.
    pub last_line: Arc<Mutex<String>>,
    /// Replaces secret values with `***` before anything is written.
    mask: Option<Masker>,
}

/// Replaces every occurrence of a secret value with `***` in a stream of chunks, also when a
/// value arrives split across two chunks: a chunk's tail that could be the start of a secret
/// is held back until the next chunk (or the end) decides.
pub struct Masker {
    finder: aho_corasick::AhoCorasick,
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    /// `None` when there is nothing to mask. Empty values are ignored.
    pub fn new(secrets: &[Vec<u8>]) -> Option<Masker> {
        let secrets: Vec<Vec<u8>> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        if secrets.is_empty() {
            return None;
        }
        let finder = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&secrets)
            .ok()?;
        Some(Masker {
            finder,
            secrets,
            held: Vec::new(),
        })
    }

    /// The masked bytes that are safe to write now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buf.len());
        let mut last = 0;
        for m in self.finder.find_iter(&buf) {
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(b"***");
            last = m.end();
        }
        let rest = &buf[last..];
        let hold = self
            .secrets
            .iter()
            .flat_map(|s| {
                (1..s.len().min(rest.len() + 1))
                    .rev()
                    .find(|k| rest.ends_with(&s[..*k]))
            })
            .max()
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - hold]);
        self.held = rest[rest.len() - hold..].to_vec();
        out
    }

    /// Whatever was held back: at the end of the stream it cannot become a secret any more.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

fn stamp() -> String {
    let mut s = timefmt::rfc3339(OffsetDateTime::now_utc());
    s.push(' ');
    s
}

impl FileLog {
    pub fn create(path: &Path, limit: u64, last_line: Arc<Mutex<String>>) -> std::io::Result<FileLog> {
        Ok(FileLog {
            out: BufWriter::with_capacity(256 * 1024, File::create(path)?),
            limit,
            written: 0,
            dropped: 0,
            cut: false,
            at_line_start: true,
            error: false,
            scratch: Vec::new(),
            last_line,
            mask: None,
        })
    }

    /// Masks these values (a job's secrets) in everything written from now on.
    pub fn mask(&mut self, secrets: &[Vec<u8>]) {
        self.mask = Masker::new(secrets);
    }

    fn put(&mut self, b: &[u8]) {
        if !self.error && self.out.write_all(b).is_err() {
            self.error = true;
        }
        self.written += b.len() as u64;
    }

    /// Flushes; returns (bytes written, whether output was cut).
    pub fn finish(&mut self) -> (u64, bool) {
        if let Some(rest) = self.mask.as_mut().map(Masker::finish) {
            self.write_output(&rest);
        }
        if self.cut {
            let n = self.dropped;
            self.note(&format!(
                "{n} more bytes of output were dropped: raise the limit with --log-limit"
            ));
        }
        let _ = self.out.flush();
        (self.written, self.cut)
    }

    fn remember_last_line(&mut self, bytes: &[u8]) {
        // Only the chunk's tail is looked at: a chunk of blank lines costs nothing.
        let tail = &bytes[bytes.len().saturating_sub(4096)..];
        let Some(line) = tail
            .split(|b| *b == b'\n')
            .rev()
            .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        else {
            return;
        };
        let line = &line[..line.len().min(200)];
        let s: String = String::from_utf8_lossy(line)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        {
            let mut l = self.last_line.lock();
            *l = s;
        }
    }
}

impl LogSink for FileLog {
    fn output(&mut self, bytes: &[u8]) {
        match self.mask.as_mut() {
            Some(m) => {
                let masked = m.push(bytes);
                self.write_output(&masked);
            }
            None => self.write_output(bytes),
        }
        // Followers (`takt logs -f`, SSE) read the file: what arrived is visible at once.
        if !self.error && self.out.flush().is_err() {
            self.error = true;
        }
    }

    fn note(&mut self, text: &str) {
        // Output held back by the masker came before this note: write it first, in order. (A
        // secret split by a note is not contiguous in the log, so it cannot be read there.)
        if let Some(rest) = self.mask.as_mut().map(Masker::finish) {
            self.write_output(&rest);
        }
        if !self.at_line_start {
            self.put(b"\n");
        }
        let line = format!("{}[takt] {text}\n", stamp());
        self.put(line.as_bytes());
        self.at_line_start = true;
        let _ = self.out.flush();
    }
}

impl FileLog {
    fn write_output(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.remember_last_line(bytes);
        if self.cut {
            self.dropped += bytes.len() as u64;
            return;
        }
        // Every line that starts in this chunk arrived now: one stamp for the chunk, and the
        // stamped lines assembled in one buffer, written with one call.
        let ts = stamp();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut start = 0;
        let mut lines = memchr::memchr_iter(b'\n', bytes)
            .map(|p| p + 1)
            .chain(std::iter::once(bytes.len()));
        while start < bytes.len() {
            let end = lines.next().unwrap_or(bytes.len());
            if end <= start {
                continue;
            }
            let piece = &bytes[start..end];
            let need = piece.len() as u64 + if self.at_line_start { ts.len() as u64 } else { 0 };
            if self.written + buf.len() as u64 + need > self.limit {
                self.put(&buf);
                self.cut = true;
                self.dropped += (bytes.len() - start) as u64;
                let limit = self.limit;
                self.note(&format!(
                    "log cut at {limit} bytes (the limit); the job keeps running, its further output is dropped"
                ));
                self.scratch = buf;
                return;
            }
            if self.at_line_start {
                buf.extend_from_slice(ts.as_bytes());
            }
            buf.extend_from_slice(piece);
            self.at_line_start = piece.ends_with(b"\n");
            start = end;
        }
        self.put(&buf);
        self.scratch = buf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secrets_also_when_split_across_chunks() {
        let mut m = Masker::new(&[b"hunter22".to_vec(), b"s3cr3t-token".to_vec()]).unwrap();
        let mut out = Vec::new();
        for chunk in [
            &b"pass=hun"[..],
            b"ter22 and s3",
            b"cr3t-",
            b"token!\nhunter2 is not it\nend s3c",
        ] {
            out.extend(m.push(chunk));
        }
        out.extend(m.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "pass=*** and ***!\nhunter2 is not it\nend s3c"
        );
        // Every split point of a value in a stream.
        let text = b"a hunter22 b";
        for cut in 0..text.len() {
            let mut m = Masker::new(&[b"hunter22".to_vec()]).unwrap();
            let mut out = m.push(&text[..cut]);
            out.extend(m.push(&text[cut..]));
            out.extend(m.finish());
            assert_eq!(out, b"a *** b", "split at {cut}");
        }
    }

    #[test]
    fn stamps_lines_across_chunks_and_cuts_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut log = FileLog::create(&p, 200, Arc::default()).unwrap();
        log.output(b"hello ");
        log.output(b"world\nsecond\n");
        log.output(&[0xff, 0x00, b'\n']);
        log.output(&[b'x'; 500]);
        let (_, cut) = log.finish();
        assert!(cut);
        let text = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("Z hello world"), "{text}");
        assert!(lines[1].ends_with("Z second"));
        assert!(lines[3].contains("[takt] log cut at 200 bytes"), "{text}");
        assert!(lines[4].contains("500 more bytes"), "{text}");
        assert_eq!(*log.last_line.lock(), "x".repeat(200));
    }

    /// The tail the masker holds back is written before a later note, not after it.
    #[test]
    fn held_back_output_is_written_before_later_notes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut log = FileLog::create(&p, 1 << 20, Arc::default()).unwrap();
        log.mask(&[b"hunter22".to_vec()]);
        log.output(b"done, last word: hun");
        log.note("artifact app@1 stored");
        log.output(b"hunter22 again\n");
        log.finish();
        let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("done, last word: hun"), "{text}");
        assert!(lines[1].contains("[takt] artifact app@1 stored"), "{text}");
        assert!(lines[2].ends_with("*** again"), "{text}");
        assert!(!text.contains("hunter22"), "{text}");
    }
}
