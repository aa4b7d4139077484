//! The OpenAPI document (`docs/openapi.json`) as a validator of answers, for `tests/openapi.rs`
//! and for the answers the docs show (`tests/docs.rs`).

use serde_json::Value;

use super::repo_path;

/// The document.
pub fn document() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_path("docs/openapi.json")).unwrap()).unwrap()
}

/// `/v1/actors/{actor_id}/balance` as a JSON pointer token.
fn token(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// Follows `$ref`s within the document.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        value = doc.pointer(reference.trim_start_matches('#')).unwrap_or_else(|| panic!("{reference} resolves"));
    }
    value
}

const LOCATION: &str = "urn:fluxflow:openapi";

/// The document's schemas, compiled with a JSON Schema 2020-12 validator.
pub struct Validator {
    doc: Value,
    compiler: boon::Compiler,
    schemas: boon::Schemas,
}

impl Validator {
    pub fn new() -> Validator {
        let doc = document();
        let mut compiler = boon::Compiler::new();
        compiler.add_resource(LOCATION, doc.clone()).unwrap();
        Validator { doc, compiler, schemas: boon::Schemas::new() }
    }

    fn validate(&mut self, pointer: &str, body: &Value) -> Result<(), String> {
        let index =
            self.compiler.compile(&format!("{LOCATION}#{pointer}"), &mut self.schemas).map_err(|e| format!("{e:#}"))?;
        self.schemas.validate(body, index).map_err(|e| format!("{e:#}\n{body}"))
    }

    /// Checks `body` against the schema the document gives for this answer; the problem if not.
    pub fn check(&mut self, method: &str, pattern: &str, status: u16, body: &Value) -> Result<(), String> {
        let operation = format!("/paths/{}/{}", token(pattern), method.to_lowercase());
        let listed = format!("{operation}/responses/{status}");
        let response = self
            .doc
            .pointer(&listed)
            .ok_or(format!("{method} {pattern} answered {status}, which the document does not list"))?;
        // Where the response really is (a shared one of `components.responses`, or inline).
        let at = match response.get("$ref").and_then(Value::as_str) {
            Some(reference) => reference.trim_start_matches('#').to_owned(),
            None => listed,
        };
        let response = resolve(&self.doc, response);
        if response.pointer("/content/application~1json/schema").is_none() {
            return Ok(()); // not a JSON answer (metrics text)
        }
        let schema = format!("{at}/content/application~1json/schema");
        self.validate(&schema, body).map_err(|e| format!("{method} {pattern} {status}: {e}"))
    }

    /// Checks an answer whose status is not known (`curl -s` prints only the body): an error
    /// answer against the error schema, any other against the operation's success answer.
    pub fn check_answer(&mut self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let method_of = axum::http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let pattern = fluxflow::api::access::route_pattern(&method_of, path)
            .ok_or(format!("{method} {path} is no route of the API"))?;
        if body.get("code").is_some() && body.get("error").is_some() {
            return self.validate("/components/schemas/Error", body).map_err(|e| format!("{method} {path}: {e}"));
        }
        let operation = format!("/paths/{}/{}/responses", token(pattern), method.to_lowercase());
        let status = ["200", "202"]
            .into_iter()
            .find(|s| self.doc.pointer(&format!("{operation}/{s}")).is_some())
            .ok_or(format!("{method} {pattern} lists no success answer"))?;
        self.check(method, pattern, status.parse().unwrap(), body)
    }
}

/// The method and path a `curl` command line sends to the service on loopback, when it is one.
pub fn curl_request(command: &str) -> Option<(String, String)> {
    let words = shell_words(command);
    if words.first().map(String::as_str) != Some("curl") {
        return None;
    }
    let url = words.iter().find(|w| w.contains("127.0.0.1:") || w.contains("localhost:"))?;
    let after_host = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let path = after_host.find('/').map_or("/", |i| &after_host[i..]);
    let path = path.split('?').next().unwrap_or(path).to_owned();
    let explicit = words.iter().position(|w| w == "-X" || w == "--request").and_then(|i| words.get(i + 1));
    let sends_body =
        words.iter().any(|w| matches!(w.as_str(), "-d" | "--data" | "--data-binary" | "--data-raw" | "-T"));
    let method = match explicit {
        Some(m) => m.to_uppercase(),
        None if sends_body => "POST".to_owned(),
        None => "GET".to_owned(),
    };
    Some((method, path))
}

/// A command line split into words as a shell would, for the quotes docs use.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
