//! Every command and output sample in `README.md` and `docs/*.md` runs, so the docs cannot drift
//! from the program. Each doc runs in a sandbox of its own (`common::sandbox()`: a temporary
//! directory laid out like the repository, with the test-owned example rules where the service
//! looks for its rules by default, and `examples/` as shipped), with the `fluxflow` under test
//! first on the `PATH`; its blocks run in document order, so state flows from one command to the
//! next (an award, then the balance that shows it).
//!
//! - **Commands.** Every ```` ```bash ````, ```` ```sh ```` or ```` ```shell ```` block is split
//!   into commands (`\` continues a line, as does an open quote; comment lines are skipped), and
//!   each runs with `bash -o pipefail -c` in the sandbox. It must exit 0, or N when its trailing
//!   comment starts with `exit N` (`fluxflow validate typo.yaml   # exit 1`).
//! - **The service.** `fluxflow`, `fluxflow serve ...` or `fluxflow --flag ...` starts the service
//!   in the background (unless it is expected to exit), on a free loopback port instead of the one
//!   in `--addr` (8080 by default); a later service replaces it. A command that talks to
//!   `127.0.0.1:PORT` or `localhost:PORT` while no service runs starts `fluxflow serve` with its
//!   defaults first (what `cargo run --release` runs). The doc's port is rewritten to the real one
//!   in commands, and back in their output.
//! - **Commands that cannot run here** (`cargo`, `sudo`, listening on every interface, a path
//!   outside the sandbox) fail the test, unless a line `# not run by the doc tests: REASON` comes
//!   before them in their block: it covers the rest of the block. There are few (see
//!   [`MOST_NOT_RUN`]).
//! - **Output samples.** A block whose info string has `output` (```` ```json output ````,
//!   ```` ```text output ````) is the whole output (stdout and stderr) of the last command before
//!   it, byte for byte once times, UUIDs, SHA-256 hashes and `duration_ms`/`duration_us` values
//!   are masked on both sides (a final newline aside). A `json` sample of a one-line output may be
//!   spread over several lines: white space outside strings is then ignored, key order is not.
//!   `abridged` instead of `output` shows a part: for JSON, keys and array elements may be left
//!   out, but what is shown must be there, in that order; for text, lines may be left out. Say
//!   "abridged" in the prose too. `log` (```` ```text log ````) gives lines of the running service's
//!   log (masked the same way).
//! - **Files.** A block with `file=NAME` in its info string (```` ```yaml file=shop.yaml ````) is
//!   saved in the sandbox under that name for the commands after it, and a later command must use
//!   it. When the repository ships that file (`examples/event.json`), the block must be its text.
//! - **Links** to `#anchor` name a heading of the doc; relative links name a file of the
//!   repository. The docs stand alone: they name nothing outside the repository.
//!
//! `docs/rules.md` also has rules, test files, events, results and expression tables, which
//! `tests/docs_rules.rs` checks. Failures name the doc's line and are reported all together.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::docs::{self, Block, Sample};
use regex::Regex;

/// The docs whose commands run.
const DOCS: [&str; 6] =
    ["README.md", "docs/architecture.md", "docs/compat.md", "docs/operations.md", "docs/rules.md", "docs/security.md"];

/// The marker of commands that cannot run in a test.
const NOT_RUN: &str = "# not run by the doc tests:";

/// Most blocks with a [`NOT_RUN`] marker, over all docs.
const MOST_NOT_RUN: usize = 5;

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One command of a shell block.
#[derive(Debug, PartialEq)]
struct Command {
    /// Its first line in the doc.
    line: usize,
    /// The command without its comment, continuations joined.
    code: String,
    /// Its trailing comment, without the `#`.
    comment: String,
    /// The reason it is not run, when a marker comes before it.
    not_run: Option<String>,
}

/// Splits a shell block into commands.
fn commands(block: &Block) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    let mut not_run: Option<String> = None;
    let (mut code, mut comment, mut start) = (String::new(), String::new(), 0);
    let mut quote: Option<char> = None;
    for (offset, line) in block.text.lines().enumerate() {
        if code.is_empty() && quote.is_none() {
            let trimmed = line.trim();
            if let Some(reason) = trimmed.strip_prefix(NOT_RUN) {
                not_run = Some(reason.trim().to_owned());
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            start = block.line + 1 + offset;
        }
        let (mut end, mut escaped, mut after_blank) = (line.len(), false, true);
        for (i, c) in line.char_indices() {
            if escaped {
                escaped = false;
                after_blank = false;
                continue;
            }
            match (quote, c) {
                (Some('\''), '\'') | (Some('"'), '"') => quote = None,
                (Some('"'), '\\') | (None, '\\') => escaped = true,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if after_blank => {
                    end = i;
                    comment = line[i + 1..].trim().to_owned();
                    break;
                }
                (None, _) => {}
            }
            after_blank = c.is_whitespace();
        }
        let part = &line[..end];
        if quote.is_some() {
            code.push_str(part);
            code.push('\n');
            continue;
        }
        if let Some(head) = part.trim_end().strip_suffix('\\').filter(|_| end == line.len()) {
            code.push_str(head);
            code.push(' ');
            continue;
        }
        code.push_str(part);
        out.push(Command {
            line: start,
            code: std::mem::take(&mut code).trim().to_owned(),
            comment: std::mem::take(&mut comment),
            not_run: not_run.clone(),
        });
    }
    if !code.is_empty() || quote.is_some() {
        return Err("the block ends inside a command (an open quote or a trailing `\\`)".into());
    }
    Ok(out)
}

/// The exit code a command must give: N when its comment starts with `exit N`, else 0.
fn expected_exit(comment: &str) -> i32 {
    comment
        .strip_prefix("exit ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0)
}

static LOOPBACK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(?:127\.0\.0\.1|localhost):(\d+)").unwrap());
static ADDR_FLAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"--addr[ =](\S+)").unwrap());
static OUTSIDE_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?:^|[\s=@'"])/(?:etc|var|usr|opt|srv|mnt|home|root|tmp|path)\b"#).unwrap());

/// Why a command cannot run in a test, if it cannot.
fn cannot_run(code: &str) -> Option<String> {
    let first = code.split_whitespace().next().unwrap_or_default();
    if ["cargo", "rustup", "sudo", "docker", "kubectl", "systemctl"].contains(&first) {
        return Some(format!("it runs `{first}`"));
    }
    if code.contains("0.0.0.0") || code.contains("--addr :") || code.contains("--addr=:") {
        return Some("it listens on every interface".into());
    }
    if OUTSIDE_PATH.is_match(code) {
        return Some("it names a path outside the sandbox".into());
    }
    None
}

/// `fluxflow` with no command, `serve`, or only flags: the service.
fn is_service(code: &str) -> bool {
    let mut words = code.split_whitespace();
    words.next() == Some("fluxflow")
        && match words.next() {
            None | Some("serve") => true,
            Some(flag) => flag.starts_with("--") && !matches!(flag, "--help" | "--version"),
        }
}

/// The service a doc's commands talk to.
struct Service {
    child: Child,
    /// The port the doc names.
    doc_port: String,
    /// The port it listens on.
    port: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the last command printed.
struct Ran {
    output: String,
}

/// One doc, run.
struct Run {
    name: &'static str,
    sandbox: tempfile::TempDir,
    service: Option<Service>,
    last: Option<Ran>,
    /// Files saved from blocks that no command used yet: name and line.
    unused_files: Vec<(String, usize)>,
    commands_run: usize,
    /// Answers checked against the OpenAPI document.
    answers_checked: usize,
    openapi: common::openapi::Validator,
    problems: Vec<String>,
}

impl Run {
    fn new(name: &'static str) -> Run {
        Run {
            name,
            sandbox: common::sandbox(),
            service: None,
            last: None,
            unused_files: Vec::new(),
            commands_run: 0,
            answers_checked: 0,
            openapi: common::openapi::Validator::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, line: usize, problem: impl std::fmt::Display) {
        self.problems.push(format!("{}:{line}: {problem}", self.name));
    }

    /// `bash -o pipefail -c CODE` in the sandbox, `fluxflow` first on the PATH, no `FLUXFLOW_*`
    /// settings from outside.
    fn shell(&self, code: &str) -> std::process::Command {
        let bin_dir = Path::new(common::bin()).parent().unwrap();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut command = std::process::Command::new("bash");
        command.args(["-o", "pipefail", "-c", code]).current_dir(self.sandbox.path()).env("PATH", path);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLUXFLOW_") {
                command.env_remove(key);
            }
        }
        command
    }

    fn block(&mut self, block: &Block) {
        if block.lang == "console" {
            self.problem(block.line, "write commands in ```sh blocks and their output in ```text output blocks");
        }
        if let Some(name) = block.file() {
            self.save(block, name);
        }
        if block.is_shell() {
            match commands(block) {
                Ok(commands) => commands.iter().for_each(|c| self.command(c)),
                Err(e) => self.problem(block.line, e),
            }
        }
        if let Some(kind) = block.sample() {
            self.sample(block, kind);
        }
    }

    fn save(&mut self, block: &Block, name: &str) {
        let shipped = common::repo_path(name);
        if shipped.is_file() && std::fs::read_to_string(&shipped).ok().as_deref() != Some(block.text.as_str()) {
            self.problem(block.line, format!("the block saved as {name} is not the text of the repository's {name}"));
        }
        let path = self.sandbox.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, &block.text).unwrap();
        self.unused_files.push((name.to_owned(), block.line));
    }

    fn command(&mut self, command: &Command) {
        self.last = None;
        if let Some(reason) = &command.not_run {
            if reason.is_empty() {
                self.problem(command.line, format!("say why `{}` is not run: `{NOT_RUN} REASON`", command.code));
            }
            return;
        }
        if let Some(why) = cannot_run(&command.code) {
            let code = &command.code;
            let problem = format!("`{code}` cannot run in a test ({why}); put `{NOT_RUN} REASON` on a line before it");
            self.problem(command.line, problem);
            return;
        }
        self.unused_files.retain(|(name, _)| !command.code.contains(name.as_str()));
        self.commands_run += 1;
        let expected = expected_exit(&command.comment);
        if is_service(&command.code) && expected == 0 {
            self.start_service(command);
            return;
        }
        let port = LOOPBACK.captures(&command.code).map(|c| c[1].to_owned());
        if let (None, Some(port)) = (&self.service, port) {
            self.start_service(&Command {
                line: command.line,
                code: format!("fluxflow serve --addr 127.0.0.1:{port}"),
                comment: String::new(),
                not_run: None,
            });
        }
        let code = self.service_address_in(&command.code);
        let (code_got, output) = match self.output_of(&code) {
            Ok(ran) => ran,
            Err(e) => return self.problem(command.line, format!("`{}`: {e}", command.code)),
        };
        let output = self.doc_address_in(&output);
        self.check_answer(command, &output);
        if code_got != Some(expected) {
            let got = code_got.map_or("no exit code".to_owned(), |c| format!("exit code {c}"));
            let problem = format!(
                "`{}` gave {got}, not {expected} (a trailing `# exit N` comment says when a command must fail); \
                 it printed:\n{}",
                command.code,
                docs::indent(&output)
            );
            self.problem(command.line, problem);
        }
        self.last = Some(Ran { output });
    }

    /// A JSON answer of the service that a `curl` command printed (not piped elsewhere) must fit
    /// the API's OpenAPI document, so the answers the docs show do too.
    fn check_answer(&mut self, command: &Command, output: &str) {
        let Some((method, path)) = common::openapi::curl_request(&command.code) else { return };
        let Ok(body) = serde_json::from_str::<serde_json::Value>(output) else { return };
        if command.code.contains('|') {
            return;
        }
        self.answers_checked += 1;
        if let Err(problem) = self.openapi.check_answer(&method, &path, &body) {
            self.problem(command.line, format!("the answer does not fit docs/openapi.json: {problem}"));
        }
    }

    /// Runs a command to its end; its exit code and what it printed (stdout and stderr, merged).
    fn output_of(&self, code: &str) -> Result<(Option<i32>, String), String> {
        let mut child = self
            .shell(&format!("{{ {code}\n}} 2>&1"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {} s", COMMAND_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let output = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
        Ok((status.code(), output))
    }

    /// Starts the service a command describes, on a free port, in place of the one running.
    fn start_service(&mut self, command: &Command) {
        self.service = None;
        let doc_port = match ADDR_FLAG.captures(&command.code) {
            None => "8080".to_owned(),
            Some(addr) => match LOOPBACK.captures(&addr[1]) {
                Some(port) => port[1].to_owned(),
                None => {
                    let problem = format!("`{}`: listen on 127.0.0.1 or localhost", command.code);
                    return self.problem(command.line, problem);
                }
            },
        };
        let code = ADDR_FLAG.replace(&command.code, "--addr 127.0.0.1:0");
        let mut shell = self.shell(&format!("exec {code}"));
        shell.env("FLUXFLOW_ADDR", "127.0.0.1:0");
        match common::launch(shell) {
            Ok(launched) => {
                let port = launched.addr.rsplit(':').next().unwrap_or_default().to_owned();
                self.service = Some(Service { child: launched.child, doc_port, port, log: launched.log });
            }
            Err(log) => self.problem(command.line, format!("`{}`: {log}", command.code)),
        }
    }

    /// A command with the doc's service address made the real one.
    fn service_address_in(&self, code: &str) -> String {
        let Some(service) = &self.service else { return code.to_owned() };
        LOOPBACK
            .replace_all(code, |c: &regex::Captures| {
                if c[1] == service.doc_port { format!("127.0.0.1:{}", service.port) } else { c[0].to_owned() }
            })
            .into_owned()
    }

    /// Output with the real service address made the doc's.
    fn doc_address_in(&self, output: &str) -> String {
        match &self.service {
            Some(s) => output.replace(&format!("127.0.0.1:{}", s.port), &format!("127.0.0.1:{}", s.doc_port)),
            None => output.to_owned(),
        }
    }

    fn sample(&mut self, block: &Block, kind: Sample) {
        let json = block.lang == "json";
        let checked = match (kind, self.last.take(), &self.service) {
            (Sample::Log, _, Some(service)) => {
                let log = Arc::clone(&service.log);
                let want: Vec<String> = block.text.lines().map(docs::mask).collect();
                let found = common::wait_until(Duration::from_secs(5), || {
                    let lines: Vec<String> = log.lock().unwrap().iter().map(|l| docs::mask(l)).collect();
                    want.iter().all(|w| lines.contains(w))
                });
                if found {
                    Ok(())
                } else {
                    let log = log.lock().unwrap().join("\n");
                    Err(format!("the service did not log these lines; its log:\n{}", docs::indent(&log)))
                }
            }
            (Sample::Log, _, None) => Err("a log sample needs the service running".into()),
            (_, None, _) => Err("an output sample needs a command that ran right before it".into()),
            (Sample::Output, Some(ran), _) => docs::check_output(&block.text, json, &ran.output),
            (Sample::Abridged, Some(ran), _) => docs::check_abridged(&block.text, json, &ran.output),
        };
        if let Err(problem) = checked {
            self.problem(block.line, problem);
        }
    }
}

/// Runs a doc's blocks; its problems.
fn run_doc(name: &'static str) -> (Vec<String>, usize, usize) {
    let text = std::fs::read_to_string(common::repo_path(name)).unwrap();
    let mut run = Run::new(name);
    for block in docs::blocks(name, &text) {
        run.block(&block);
    }
    for (file, line) in std::mem::take(&mut run.unused_files) {
        run.problem(line, format!("no command uses the file saved as {file}"));
    }
    run.problems.extend(docs::check_links(&common::repo_path(""), name, &text));
    (std::mem::take(&mut run.problems), run.commands_run, run.answers_checked)
}

/// Runs a doc; answers how many of the service's answers it checked against the OpenAPI document.
fn check_doc(name: &'static str, least_commands: usize) -> usize {
    let (problems, ran, answers) = run_doc(name);
    assert!(problems.is_empty(), "{} problem(s) in {name}:\n\n{}", problems.len(), problems.join("\n\n"));
    assert!(ran >= least_commands, "{name}: expected at least {least_commands} commands to run, ran {ran}");
    answers
}

#[test]
fn readme() {
    let answers = check_doc("README.md", 5);
    assert!(answers >= 10, "README.md: {answers} answers checked against docs/openapi.json");
}

#[test]
fn operations() {
    check_doc("docs/operations.md", 3);
}

#[test]
fn rules_guide() {
    check_doc("docs/rules.md", 6);
}

#[test]
fn security_guide() {
    check_doc("docs/security.md", 1);
}

#[test]
fn architecture() {
    check_doc("docs/architecture.md", 0);
}

#[test]
fn compat() {
    check_doc("docs/compat.md", 0);
}

/// Every doc in `docs/` is one of [`DOCS`].
#[test]
fn every_doc_runs() {
    for entry in std::fs::read_dir(common::repo_path("docs")).unwrap() {
        let name = format!("docs/{}", entry.unwrap().file_name().to_string_lossy());
        assert!(!name.ends_with(".md") || DOCS.contains(&name.as_str()), "{name} is not run by tests/docs.rs");
    }
}

/// Commands that are not run are few, and each says why.
#[test]
fn few_commands_are_not_run() {
    let mut marked = Vec::new();
    for name in DOCS {
        let text = std::fs::read_to_string(common::repo_path(name)).unwrap();
        for block in docs::blocks(name, &text).iter().filter(|b| b.text.contains(NOT_RUN)) {
            marked.push(format!("{name}:{}", block.line));
        }
    }
    assert!(marked.len() <= MOST_NOT_RUN, "{} blocks hold commands that are not run: {marked:?}", marked.len());
}

/// The docs name nothing that a clone of the repository does not have.
#[test]
fn docs_stand_alone() {
    let mut problems = Vec::new();
    for name in DOCS {
        let text = std::fs::read_to_string(common::repo_path(name)).unwrap();
        for (index, line) in text.lines().enumerate() {
            for outside in ["../shared", "CONTRACT"] {
                if line.contains(outside) {
                    problems.push(format!("{name}:{}: names {outside}, which is not in the repository", index + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn block(text: &str) -> Block {
    Block { lang: "sh".into(), words: Vec::new(), line: 10, text: text.into() }
}

#[test]
fn blocks_split_into_commands() {
    let text = "# a comment\nfluxflow validate a.yaml   # exit 1: it's broken\n\ncurl -s x \\\n  -d '{\"a\":\n 1}' # c\n\
                # not run by the doc tests: cargo\ncargo test\n";
    let got = commands(&block(text)).unwrap();
    let want = [
        Command {
            line: 12,
            code: "fluxflow validate a.yaml".into(),
            comment: "exit 1: it's broken".into(),
            not_run: None,
        },
        Command { line: 14, code: "curl -s x    -d '{\"a\":\n 1}'".into(), comment: "c".into(), not_run: None },
        Command { line: 18, code: "cargo test".into(), comment: String::new(), not_run: Some("cargo".into()) },
    ];
    assert_eq!(got, want);
    assert_eq!(expected_exit(&got[0].comment), 1);
    assert_eq!(expected_exit(&got[1].comment), 0);
    assert!(commands(&block("echo 'open\n")).is_err());
    assert_eq!(commands(&block("echo a#b \\# 'c # d'\n")).unwrap()[0].code, "echo a#b \\# 'c # d'");
}

#[test]
fn what_cannot_run_and_what_is_the_service() {
    assert!(cannot_run("cargo run --release").is_some());
    assert!(cannot_run("fluxflow serve --addr 0.0.0.0:8080").is_some());
    assert!(cannot_run("fluxflow --config /etc/fluxflow/rules.yaml").is_some());
    assert!(cannot_run("curl -s http://127.0.0.1:8080/v1/events -d @examples/event.json").is_none());
    assert!(is_service("fluxflow") && is_service("fluxflow serve --config x") && is_service("fluxflow --ledger none"));
    assert!(!is_service("fluxflow --help") && !is_service("fluxflow validate x") && !is_service("curl fluxflow"));
}

#[test]
fn samples_are_compared_masked() {
    let output =
        r#"{"event_id":"01a225b1-57e2-7190-b2e6-25e8e88ee6dd","duration_ms":1,"at":"2026-11-29T05:05:09.091306Z"}"#;
    let sample = "{\"event_id\": \"0190aaaa-0000-7000-8000-000000000000\", \"duration_ms\": 0,\n \"at\": \"2025-01-01T00:00:00Z\"}\n";
    assert_eq!(docs::check_output(sample, true, output), Ok(()));
    assert!(docs::check_output(sample, false, output).is_err(), "text is compared byte for byte");
    let reordered = "{\"duration_ms\": 0, \"event_id\": \"0190aaaa-0000-7000-8000-000000000000\", \"at\": \"2025-01-01T00:00:00Z\"}";
    assert!(docs::check_output(reordered, true, output).is_err(), "key order counts");
    assert!(
        docs::check_abridged(r#"{"event_id":"0190aaaa-0000-7000-8000-000000000000","at":"x"}"#, true, output).is_err()
    );
    assert_eq!(docs::check_abridged(r#"{"duration_ms":5}"#, true, output), Ok(()));
    assert!(
        docs::check_abridged(r#"{"at":"2025-01-01T00:00:00Z","duration_ms":5}"#, true, output).is_err(),
        "order counts"
    );
    assert_eq!(docs::check_abridged("b\nd\n", false, "a\nb\nc\nd\n"), Ok(()));
    assert!(docs::check_abridged("d\nb\n", false, "a\nb\nc\nd\n").is_err());
}
