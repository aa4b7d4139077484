//! The service's logs: `tracing` records, filtered by `FLUXFLOW_LOG` and formatted as text or
//! JSON, written by a background thread in batches ([`sink`]); and the access line, one per
//! request, which is written straight into that sink in the same format when it can be.
//!
//! The access line is most of what is logged under load. Through `tracing-subscriber`'s
//! formatter it cost ~1.5 µs of CPU per request (field visitors, styling, its own clock
//! formatting); written directly it is one timestamp and a few `write!`s. [`access`] falls back
//! to `tracing` whenever the direct line could differ from the formatter's: colours on a
//! terminal, or a path that would need escaping.

pub mod sink;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per record.
    Text,
    /// One JSON object per line.
    Json,
}

/// The access log's target: `FLUXFLOW_LOG=info,fluxflow::access=off` turns it off.
pub const ACCESS_TARGET: &str = "fluxflow::access";

/// Where direct access lines go, once [`init`] has run.
struct DirectAccess {
    sink: sink::LogSink,
    format: LogFormat,
}

static DIRECT_ACCESS: OnceLock<DirectAccess> = OnceLock::new();

/// Installs the global subscriber over a batched writer to stdout. Keep the guard until exit:
/// dropping it writes what is left.
pub fn init(format: LogFormat) -> std::io::Result<sink::FlushGuard> {
    let (writer, guard) = sink::start(std::io::stdout(), |dropped| {
        tracing::warn!(dropped, "log lines dropped: the log output was too slow");
    })?;
    let filter = EnvFilter::try_from_env("FLUXFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone());
    let ansi = format == LogFormat::Text && std::io::stdout().is_terminal();
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(ansi).init(),
    }
    if !ansi {
        let _ = DIRECT_ACCESS.set(DirectAccess { sink: writer, format });
    }
    Ok(guard)
}

/// Logs one request: the same line as `tracing::info!(target: "fluxflow::access", %method, path,
/// status, duration_us, "request")` writes.
pub fn access(method: &str, path: &str, status: u16, duration_us: u64) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    match DIRECT_ACCESS.get() {
        Some(direct) if needs_no_escaping(method) && needs_no_escaping(path) => {
            let line = access_line(direct.format, &jiff::Timestamp::now(), method, path, status, duration_us);
            direct.sink.write_line(line.as_bytes());
        }
        _ => tracing::info!(target: ACCESS_TARGET, %method, path, status, duration_us, "request"),
    }
}

/// True when the text is written the same by Rust's `Debug` (text format) and by JSON: printable
/// ASCII without quotes or backslashes, as request paths nearly always are.
fn needs_no_escaping(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The access line, exactly as `tracing-subscriber`'s formatters write it without colours.
fn access_line(
    format: LogFormat,
    at: &jiff::Timestamp,
    method: &str,
    path: &str,
    status: u16,
    duration_us: u64,
) -> String {
    let mut line = String::with_capacity(192);
    // `write!` into a String cannot fail.
    let _ = match format {
        LogFormat::Text => writeln!(
            line,
            "{at:.6}  INFO {ACCESS_TARGET}: request method={method} path=\"{path}\" status={status} \
             duration_us={duration_us}"
        ),
        LogFormat::Json => writeln!(
            line,
            "{{\"timestamp\":\"{at:.6}\",\"level\":\"INFO\",\"fields\":{{\"message\":\"request\",\
             \"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"duration_us\":{duration_us}}},\
             \"target\":\"{ACCESS_TARGET}\"}}"
        ),
    };
    line
}

#[cfg(test)]
mod tests {
    use super::sink::tests::Captured;
    use super::*;

    /// The line `tracing-subscriber` writes for the access record, in a format.
    fn formatter_line(format: LogFormat, method: &str, path: &str, status: u16, duration_us: u64) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt().with_writer(out.clone()).with_ansi(false);
        let record = || tracing::info!(target: ACCESS_TARGET, %method, path, status, duration_us, "request");
        match format {
            LogFormat::Text => tracing::subscriber::with_default(builder.finish(), record),
            LogFormat::Json => tracing::subscriber::with_default(builder.json().finish(), record),
        }
        out.text()
    }

    /// A line with its timestamp (the first 27 characters of either format's time) masked.
    fn without_time(line: &str) -> String {
        let re = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z").unwrap();
        assert!(re.is_match(line), "a timestamp with microseconds in {line:?}");
        re.replace(line, "TIME").into_owned()
    }

    #[test]
    fn the_direct_line_is_the_formatters_line() {
        for format in [LogFormat::Text, LogFormat::Json] {
            for (method, path, status, us) in [("POST", "/v1/events", 200, 118), ("GET", "/v1/jobs/j-1", 404, 7)] {
                let direct = access_line(format, &jiff::Timestamp::now(), method, path, status, us);
                let expected = formatter_line(format, method, path, status, us);
                assert_eq!(without_time(&direct), without_time(&expected), "{format:?}");
            }
        }
    }

    #[test]
    fn only_plain_printable_ascii_is_written_directly() {
        assert!(needs_no_escaping("/v1/actors/user%2042/balance"));
        assert!(!needs_no_escaping("/v1/a\"b"));
        assert!(!needs_no_escaping("/v1/a\\b"));
        assert!(!needs_no_escaping("/v1/é"));
    }
}
