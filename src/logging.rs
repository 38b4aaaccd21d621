//! Logging setup: `tracing` to stderr; escaping of logged text; error chains.
//!
//! A bottom utility like `model`: it imports nothing of the crate.
//!
//! Logged names and paths come from places the agent does not control: pod
//! and volume directory names under the kubelet root, mountinfo, API
//! requests. A newline in a pod directory's name must not start a second,
//! forged log line, and an escape sequence must not drive the reader's
//! terminal. So every formatted log line passes through [`Escaping`], a
//! writer wrapper that escapes control characters in the whole line (not
//! only at some call sites) and keeps just the line's own terminating
//! newline. Colours are off for the same reason: the escaping would show
//! the formatter's own escape sequences as text.
//!
//! Errors are printed once, cause by cause, with [`chain`]: an error's
//! message does not repeat its source's, and the binary's edge (and every
//! log site that prints an error) joins the chain with `": "`.

use std::borrow::Cow;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Installs the stderr subscriber (filter from `level`, overridden by `RUST_LOG`).
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Escaping(io::stderr))
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// Whether `c` is shown escaped in logs: C0 and C1 control characters, DEL,
/// the Unicode line and paragraph separators and the bidirectional
/// formatting characters (which reorder what a reader sees).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every control character escaped: `\n`, `\r`, `\t`, and
/// `\u{..}` (hexadecimal code point) for the others. Backslashes are kept as
/// they are.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A [`MakeWriter`] whose writers escape control characters in each log line
/// (see [`escape`]) before handing it to the inner writer in one write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Escaping<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.0.make_writer(),
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapingWriter {
            inner: self.0.make_writer_for(meta),
            line: Vec::new(),
        }
    }
}

/// Collects one formatted event and writes it, escaped, when dropped.
#[derive(Debug)]
pub struct EscapingWriter<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for EscapingWriter<W> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let mut out = escape(body).into_owned();
        out.push_str(newline);
        // Nowhere to report a failed write to stderr.
        let _ = self.inner.write_all(out.as_bytes());
        let _ = self.inner.flush();
    }
}

/// `err` and its causes, each once, joined with `": "`.
///
/// A cause whose message the previous one already ends with (an error type
/// that both prints and reports its source) is not repeated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut next = err.source();
    while let Some(cause) = next {
        let msg = cause.to_string();
        if !msg.is_empty() && !last.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        last = msg;
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("plain/path ok"), "plain/path ok");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\rc\td\u{1b}[31me\u{7f}f\u{85}g\u{2028}h\u{202e}i\\n"),
            "a\\nb\\rc\\td\\u{1b}[31me\\u{7f}f\\u{85}g\\u{2028}h\\u{202e}i\\n"
        );
    }

    #[test]
    fn every_field_and_message_is_escaped_and_each_event_is_one_line() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Escaping(out.clone()))
            .with_ansi(false)
            .without_time()
            .finish();
        let forged = "x\n2025-01-01T00:00:00Z ERROR forged line";
        let path = std::path::Path::new("/pods/a\r\u{1b}[2Kb");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("scan", dir = %forged);
            let _g = span.enter();
            tracing::info!(pod_uid = %forged, path = %path.display(), "watching {forged}");
            tracing::warn!(?forged, "second");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
        assert!(
            lines[0].contains("pod_uid=x\\n2025-01-01T00:00:00Z ERROR forged line"),
            "{text}"
        );
        assert!(lines[0].contains("path=/pods/a\\r\\u{1b}[2Kb"), "{text}");
        assert!(lines[0].contains("dir=x\\n2025"), "{text}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] io::Error);

    /// Prints its source in its own message and reports it too.
    #[derive(Debug, thiserror::Error)]
    #[error("both: {0}")]
    struct Both(#[source] io::Error);

    #[test]
    fn chain_names_each_cause_once() {
        let e = Outer(Middle(io::Error::from_raw_os_error(libc::ENOENT)));
        let text = chain(&e);
        assert!(text.starts_with("outer: middle: "), "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        let e = Both(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(chain(&e).matches("Permission denied").count(), 1);
        let any = anyhow::Error::new(e).context("starting");
        let text = chain(any.as_ref());
        assert!(text.starts_with("starting: both: "), "{text}");
        assert_eq!(text.matches("Permission denied").count(), 1, "{text}");
    }
}
