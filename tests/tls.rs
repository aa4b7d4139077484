//! HTTPS with `--tls-cert`/`--tls-key`: a certificate made in the test (openssl), a real TLS
//! client trusting only it, and the errors for files that are not a usable pair.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{Server, bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const RULES: &str = "version: v1\nscenarios: []\n";

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key, in `dir`.
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert.display().to_string(), key.display().to_string())
}

/// `GET /healthz` over TLS, trusting only `cert`; the raw answer.
async fn get_over_tls(addr: &str, cert: &str) -> std::io::Result<String> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[test]
fn serves_https_with_the_given_certificate_and_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let server = Server::start(RULES, &["--tls-cert", &cert, "--tls-key", &key]);
    let said = common::wait_until(std::time::Duration::from_secs(2), || server.log_text().contains("scheme=https"));
    assert!(said, "{}", server.log_text());
    let addr = server.base.trim_start_matches("http://").to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(get_over_tls(&addr, &cert)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"status":"ok"}"#), "{answer}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = server.client.get(server.url("/healthz")).send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[test]
fn files_that_are_not_a_usable_pair_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = certificate(other.path());
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let start = |cert: &str, key: &str| {
        let output = Command::new(bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--ledger", "none", "--config"])
            .arg(&rules)
            .args(["--tls-cert", cert, "--tls-key", key])
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, log) = start(&key, &key);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("--tls-cert") && log.contains("no PEM certificate"), "{log}");
    let (code, log) = start(&cert, &cert);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("--tls-key"), "{log}");
    let (code, log) = start(&cert, &other_key);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("do not make a usable pair"), "{log}");
    let output = Command::new(bin()).args(["serve", "--tls-cert", &cert]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "--tls-cert without --tls-key is a usage error");
}
