//! The seed document: what first boot tells a node (SPEC "Interfaces",
//! Seeding). Parsing is strict and total: untrusted user-data either yields
//! a fully valid `Seed` or an error naming the key at fault, never a panic
//! and never a partial result.
//!
//! ```yaml
//! troops:
//!   remotes: [{name: origin, url: "git@repos.example.com:deploy"}]
//!   roles: [web]
//!   branch: master
//!   signatures: ssh            # none, ssh or gpg
//!   allowed_signers: ["admin@example.com ssh-ed25519 AAAA..."]
//!   gpg_keys: ["-----BEGIN PGP PUBLIC KEY BLOCK-----..."]
//!   pull_interval: 15min       # a systemd time span
//!   known_hosts: ["repos.example.com ssh-ed25519 AAAA..."]
//!   https_ca: "-----BEGIN CERTIFICATE-----..."   # pinned for HTTPS remotes
//!   report: {url: "git@repos.example.com:fleet", heartbeat: 1h}
//! ```
//!
//! User-data may be that document, or a `#cloud-config` whose `write_files`
//! writes it to /etc/troops/seed.yaml.

use std::fmt;

use serde_json::{Map, Value};

use crate::config::{Policy, ReportRemote, check_report, validate_branch};
use crate::remotes;

/// Where cloud-init's `write_files` puts the seed, and where Troops keeps it.
pub const SEED_PATH: &str = "/etc/troops/seed.yaml";
/// Refuse documents larger than this before parsing them.
const MAX_LEN: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    pub remotes: Vec<Remote>,
    pub roles: Vec<String>,
    pub branch: Option<String>,
    pub signatures: Option<Policy>,
    pub allowed_signers: Vec<String>,
    pub gpg_keys: Vec<String>,
    pub pull_interval: Option<String>,
    /// Git servers' host keys, in ssh's known_hosts format.
    pub known_hosts: Vec<String>,
    /// The CA certificates (PEM) that HTTPS remotes must chain to.
    pub https_ca: Option<String>,
    /// Where the node pushes its status reports.
    pub report: Option<ReportRemote>,
}

/// A rejection: the key at fault (`troops.remotes[1].url`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for Invalid {}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Reads user-data: the seed document, a cloud-config carrying it, a MIME
/// multipart whose cloud-config part carries it, or (`Ok(None)`) user-data
/// that is not for Troops: empty, a script, another cloud-init format, or a
/// cloud-config or multipart without a seed. First boot must not fail for
/// user-data meant for someone else.
pub fn from_user_data(text: &str) -> Result<Option<Seed>, Invalid> {
    let start = text.trim_start();
    if start.starts_with("#cloud-config\n")
        || start.starts_with("#cloud-config\r")
        || start == "#cloud-config"
    {
        return match seed_in_cloud_config(text)? {
            Some(seed) => parse(&seed).map(Some),
            None => Ok(None),
        };
    }
    if is_multipart(start) {
        for part in multipart_cloud_configs(text) {
            if let Some(seed) = seed_in_cloud_config(&part)? {
                return parse(&seed).map(Some);
            }
        }
        return Ok(None);
    }
    // Scripts (#!), #include, #cloud-boothook, #part-handler and the like.
    if start.is_empty() || start.starts_with('#') {
        return Ok(None);
    }
    parse(text).map(Some)
}

fn is_multipart(text: &str) -> bool {
    let head = text
        .get(..text.len().min(4096))
        .unwrap_or(text)
        .to_ascii_lowercase();
    (head.starts_with("content-type:") || head.starts_with("mime-version:"))
        && head.contains("multipart/")
}

/// The bodies of the `text/cloud-config` parts of a MIME multipart
/// (cloud-init's format for several user-data parts), decoded.
fn multipart_cloud_configs(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    let Some((head, body)) = text.split_once("\n\n") else {
        return Vec::new();
    };
    let Some(boundary) = header_param(head, "boundary") else {
        return Vec::new();
    };
    let delimiter = format!("--{boundary}");
    let mut configs = Vec::new();
    for part in body.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix('\n').unwrap_or(part);
        let (headers, content) = part.split_once("\n\n").unwrap_or(("", part));
        let lower = headers.to_ascii_lowercase();
        if !lower.contains("content-type: text/cloud-config") {
            continue;
        }
        let content = if lower.contains("content-transfer-encoding: base64") {
            match decode_base64(content) {
                Some(text) => text,
                None => continue,
            }
        } else {
            content.to_owned()
        };
        configs.push(content);
    }
    configs
}

/// `boundary="X"` (or unquoted) from MIME headers.
fn header_param(headers: &str, name: &str) -> Option<String> {
    let lower = headers.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &headers[at..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([';', '\n', ' ']).next()?,
    };
    (!value.is_empty()).then(|| value.to_owned())
}

fn yaml(text: &str, key: &str) -> Result<Value, Invalid> {
    if text.len() > MAX_LEN {
        return Err(invalid(key, format!("larger than {MAX_LEN} bytes")));
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| invalid(key, format!("not valid YAML: {e}")))
}

/// The content of the `write_files` entry for /etc/troops/seed.yaml.
fn seed_in_cloud_config(text: &str) -> Result<Option<String>, Invalid> {
    let doc = yaml(text, "#cloud-config")?;
    let Some(files) = doc.get("write_files") else {
        return Ok(None);
    };
    let files = files
        .as_array()
        .ok_or_else(|| invalid("write_files", "must be a list"))?;
    for (i, file) in files.iter().enumerate() {
        let key = format!("write_files[{i}]");
        if file.get("path").and_then(Value::as_str) != Some(SEED_PATH) {
            continue;
        }
        let content = file.get("content").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                format!("{key}.content"),
                "must be the seed document, as text",
            )
        })?;
        return match file.get("encoding").and_then(Value::as_str) {
            None | Some("text/plain") => Ok(Some(content.to_owned())),
            Some("b64" | "base64") => decode_base64(content)
                .map(Some)
                .ok_or_else(|| invalid(format!("{key}.content"), "is not valid base64 UTF-8")),
            Some(other) => Err(invalid(
                format!("{key}.encoding"),
                format!("`{other}` is not supported (use plain text or b64)"),
            )),
        };
    }
    Ok(None)
}

fn decode_base64(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        if byte == b'=' {
            break;
        }
        let value = ALPHABET.iter().position(|&a| a == byte)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses and validates a seed document.
pub fn parse(text: &str) -> Result<Seed, Invalid> {
    let doc = yaml(text, "troops")?;
    let top = doc.as_object().ok_or_else(|| {
        invalid(
            "troops",
            "the document must be a mapping with the key `troops`",
        )
    })?;
    if let Some(key) = top.keys().find(|k| *k != "troops") {
        return Err(invalid(
            key.as_str(),
            "unknown top-level key (only `troops` is read)",
        ));
    }
    let troops = top
        .get("troops")
        .ok_or_else(|| invalid("troops", "missing"))?
        .as_object()
        .ok_or_else(|| invalid("troops", "must be a mapping"))?;
    let mut seed = Seed::default();
    for (key, value) in troops {
        let path = format!("troops.{key}");
        match key.as_str() {
            "remotes" => seed.remotes = remotes(value, &path)?,
            "roles" => seed.roles = names(value, &path)?,
            "branch" => {
                let branch = string(value, &path)?;
                validate_branch(&branch).map_err(|e| invalid(&path, e))?;
                seed.branch = Some(branch);
            }
            "signatures" => seed.signatures = Some(policy(value, &path)?),
            "allowed_signers" => seed.allowed_signers = lines(value, &path)?,
            "gpg_keys" => seed.gpg_keys = gpg_keys(value, &path)?,
            "known_hosts" => seed.known_hosts = known_hosts(value, &path)?,
            "https_ca" => seed.https_ca = Some(certificates(value, &path)?),
            "report" => seed.report = Some(report(value, &path)?),
            "pull_interval" => {
                let span = string(value, &path)?;
                validate_time_span(&span).map_err(|e| invalid(&path, e))?;
                seed.pull_interval = Some(span);
            }
            _ => return Err(invalid(path, "unknown key")),
        }
    }
    Ok(seed)
}

fn string(value: &Value, path: &str) -> Result<String, Invalid> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(path, "must be a string"))
}

fn list<'v>(value: &'v Value, path: &str) -> Result<&'v Vec<Value>, Invalid> {
    value
        .as_array()
        .ok_or_else(|| invalid(path, "must be a list"))
}

fn remotes(value: &Value, path: &str) -> Result<Vec<Remote>, Invalid> {
    let mut remotes: Vec<Remote> = Vec::new();
    for (i, item) in list(value, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let map: &Map<String, Value> = item
            .as_object()
            .ok_or_else(|| invalid(&at, "must be a mapping with `name` and `url`"))?;
        if let Some(key) = map.keys().find(|k| *k != "name" && *k != "url") {
            return Err(invalid(format!("{at}.{key}"), "unknown key"));
        }
        let name = string(
            map.get("name")
                .ok_or_else(|| invalid(format!("{at}.name"), "missing"))?,
            &format!("{at}.name"),
        )?;
        let url = string(
            map.get("url")
                .ok_or_else(|| invalid(format!("{at}.url"), "missing"))?,
            &format!("{at}.url"),
        )?;
        remotes::check_name(&name).map_err(|e| invalid(format!("{at}.name"), e))?;
        remotes::check(&name, &url, remotes::Source::Root)
            .map_err(|e| invalid(format!("{at}.url"), e))?;
        if remotes.iter().any(|r| r.name == name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("`{name}` is listed twice"),
            ));
        }
        remotes.push(Remote { name, url });
    }
    Ok(remotes)
}

fn report(value: &Value, path: &str) -> Result<ReportRemote, Invalid> {
    let map = value
        .as_object()
        .ok_or_else(|| invalid(path, "must be a mapping with `url` (and `heartbeat`)"))?;
    if let Some(key) = map.keys().find(|k| *k != "url" && *k != "heartbeat") {
        return Err(invalid(format!("{path}.{key}"), "unknown key"));
    }
    let field = |key: &str| {
        map.get(key)
            .map(|v| string(v, &format!("{path}.{key}")))
            .transpose()
    };
    let report = ReportRemote {
        url: field("url")?.ok_or_else(|| invalid(format!("{path}.url"), "missing"))?,
        heartbeat: field("heartbeat")?,
    };
    check_report(&report).map_err(|e| invalid(path, e))?;
    Ok(report)
}

fn names(value: &Value, path: &str) -> Result<Vec<String>, Invalid> {
    let mut names = Vec::new();
    for (i, item) in list(value, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = string(item, &at)?;
        if name.is_empty()
            || name.starts_with('-')
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                at,
                format!("`{name}` is not a role name (no spaces, not empty)"),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

fn policy(value: &Value, path: &str) -> Result<Policy, Invalid> {
    match string(value, path)?.as_str() {
        "none" => Ok(Policy::None),
        "ssh" => Ok(Policy::Ssh),
        "gpg" => Ok(Policy::Gpg),
        other => Err(invalid(
            path,
            format!("`{other}` is not one of none, ssh, gpg"),
        )),
    }
}

fn lines(value: &Value, path: &str) -> Result<Vec<String>, Invalid> {
    let mut lines = Vec::new();
    for (i, item) in list(value, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let line = string(item, &at)?;
        if line.contains(['\n', '\r']) || line.split_whitespace().count() < 3 {
            return Err(invalid(
                at,
                "must be one allowed-signers line: PRINCIPALS KEYTYPE KEY",
            ));
        }
        lines.push(line);
    }
    Ok(lines)
}

fn known_hosts(value: &Value, path: &str) -> Result<Vec<String>, Invalid> {
    let mut lines = Vec::new();
    for (i, item) in list(value, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let line = string(item, &at)?;
        let fields = line.split_whitespace().count();
        if line.chars().any(char::is_control) || line.starts_with('#') || fields < 3 {
            return Err(invalid(
                at,
                "must be one known_hosts line: HOSTS KEYTYPE KEY",
            ));
        }
        lines.push(line);
    }
    Ok(lines)
}

fn gpg_keys(value: &Value, path: &str) -> Result<Vec<String>, Invalid> {
    let mut keys = Vec::new();
    for (i, item) in list(value, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let key = string(item, &at)?;
        if !key.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            || !key.contains("-----END PGP PUBLIC KEY BLOCK-----")
        {
            return Err(invalid(at, "must be an ASCII-armoured public key block"));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// PEM certificates and nothing else (a private key has no place here).
fn certificates(value: &Value, path: &str) -> Result<String, Invalid> {
    let text = string(value, path)?;
    let blocks = text.matches("-----BEGIN ").count();
    let certificates = text.matches("-----BEGIN CERTIFICATE-----").count();
    if certificates == 0
        || blocks != certificates
        || text.matches("-----END CERTIFICATE-----").count() != certificates
    {
        return Err(invalid(
            path,
            "must be PEM certificates (-----BEGIN CERTIFICATE----- ...) and nothing else",
        ));
    }
    Ok(text)
}

/// Accepts systemd time spans such as `15min`, `1h 30min`, `90s`.
pub fn validate_time_span(span: &str) -> Result<(), String> {
    const UNITS: &[&str] = &[
        "usec", "us", "msec", "ms", "seconds", "second", "sec", "s", "minutes", "minute", "min",
        "m", "hours", "hour", "hr", "h", "days", "day", "d", "weeks", "week", "w",
    ];
    let bad = || format!("`{span}` is not a systemd time span such as `15min` or `1h 30min`");
    let mut rest = span.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if !unit.is_empty() && !UNITS.contains(&unit) {
            return Err(bad());
        }
        rest = rest[unit_len..].trim_start();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_for_someone_else_is_no_seed() {
        for other in [
            "",
            "  \n",
            "#!/bin/sh\necho hello\n",
            "#include\nhttps://example.com/x\n",
            "#cloud-boothook\n#!/bin/sh\n",
            "#cloud-config\npackages: [tmux]\n",
            "#cloud-config-archive\n- type: text/x-shellscript\n",
        ] {
            assert_eq!(from_user_data(other), Ok(None), "{other:?}");
        }
    }

    /// cloud-init's multipart: a script part, then a cloud-config part
    /// (base64 here) that writes the seed.
    fn multipart(cloud_config: &str) -> String {
        let encoded = base64(cloud_config);
        format!(
            "Content-Type: multipart/mixed; boundary=\"===XYZ==\"\nMIME-Version: 1.0\n\n\
             --===XYZ==\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n\n\
             --===XYZ==\nContent-Type: text/cloud-config\nContent-Transfer-Encoding: base64\n\n{encoded}\n\
             --===XYZ==--\n"
        )
    }

    fn base64(text: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in text.as_bytes().chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn a_multipart_carries_the_seed_in_its_cloud_config_part() {
        let config = "#cloud-config\nwrite_files:\n  - path: /etc/troops/seed.yaml\n    content: |\n      troops:\n        roles: [web]\n";
        let seed = from_user_data(&multipart(config)).unwrap().unwrap();
        assert_eq!(seed.roles, ["web"]);
        assert_eq!(
            from_user_data(&multipart("#cloud-config\npackages: [tmux]\n")),
            Ok(None)
        );
    }

    #[test]
    fn a_remote_name_git_would_refuse_is_refused_by_the_seed() {
        let doc = "troops:\n  remotes: [{name: origin.lock, url: 'git@h:d'}]\n";
        let err = parse(doc).unwrap_err();
        assert_eq!(err.key, "troops.remotes[0].name");
    }

    const FULL: &str = "troops:\n  remotes:\n    - {name: origin, url: 'git@repos.example.com:deploy'}\n  roles: [web, interactive]\n  branch: main\n  signatures: ssh\n  allowed_signers: ['admin@example.com ssh-ed25519 AAAAC3']\n  pull_interval: 1h 30min\n";

    #[test]
    fn a_full_document() {
        let seed = parse(FULL).unwrap();
        assert_eq!(
            seed.remotes,
            [Remote {
                name: "origin".into(),
                url: "git@repos.example.com:deploy".into()
            }]
        );
        assert_eq!(seed.roles, ["web", "interactive"]);
        assert_eq!(seed.branch.as_deref(), Some("main"));
        assert_eq!(seed.signatures, Some(Policy::Ssh));
        assert_eq!(seed.pull_interval.as_deref(), Some("1h 30min"));
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let doc = format!("troops:\n  https_ca: |\n    {}", ca.replace('\n', "\n    "));
        assert_eq!(parse(&doc).unwrap().https_ca.as_deref(), Some(ca));
        let doc = "troops:\n  report: {url: 'git@h:fleet', heartbeat: 2h}\n";
        let report = parse(doc).unwrap().report.unwrap();
        assert_eq!(
            (report.url.as_str(), report.heartbeat.as_deref()),
            ("git@h:fleet", Some("2h"))
        );
    }

    #[test]
    fn cloud_config_carries_the_seed_in_write_files() {
        let plain = format!(
            "#cloud-config\npackages: [git]\nwrite_files:\n  - path: /etc/troops/seed.yaml\n    content: |\n{}",
            FULL.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        );
        assert_eq!(from_user_data(&plain).unwrap(), Some(parse(FULL).unwrap()));
        let b64 = "#cloud-config\nwrite_files:\n  - path: /etc/troops/seed.yaml\n    encoding: b64\n    content: dHJvb3BzOgogIHJvbGVzOiBbd2ViXQo=\n";
        assert_eq!(from_user_data(b64).unwrap().unwrap().roles, ["web"]);
        assert_eq!(
            from_user_data("#cloud-config\npackages: [git]\n").unwrap(),
            None
        );
    }

    #[test]
    fn rejections_name_the_key() {
        let cases = [
            (
                "troops:\n  remotes: [{name: '-x', url: u}]\n",
                "troops.remotes[0].name",
            ),
            (
                "troops:\n  remotes: [{name: a, url: '--upload-pack=evil'}]\n",
                "troops.remotes[0].url",
            ),
            (
                "troops:\n  remotes: [{name: a, url: 'ext::sh -c evil'}]\n",
                "troops.remotes[0].url",
            ),
            ("troops:\n  remotes: [{name: a}]\n", "troops.remotes[0].url"),
            (
                "troops:\n  remotes: [{name: a, url: b, extra: 1}]\n",
                "troops.remotes[0].extra",
            ),
            ("troops:\n  roles: web\n", "troops.roles"),
            ("troops:\n  roles: ['two words']\n", "troops.roles[0]"),
            ("troops:\n  branch: 'a..b'\n", "troops.branch"),
            ("troops:\n  signatures: maybe\n", "troops.signatures"),
            ("troops:\n  gpg_keys: ['not a key']\n", "troops.gpg_keys[0]"),
            ("troops:\n  pull_interval: soon\n", "troops.pull_interval"),
            (
                "troops:\n  report: {url: '-oProxyCommand=x'}\n",
                "troops.report",
            ),
            ("troops:\n  report: {heartbeat: 1h}\n", "troops.report.url"),
            (
                "troops:\n  report: {url: 'h:r', every: 1h}\n",
                "troops.report.every",
            ),
            ("troops:\n  https_ca: 'trust me'\n", "troops.https_ca"),
            (
                "troops:\n  https_ca: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n\"\n",
                "troops.https_ca",
            ),
            ("troops:\n  colour: blue\n", "troops.colour"),
            ("troops: {}\nruncmd: [x]\n", "runcmd"),
            ("- a list\n", "troops"),
            ("troops: [\n", "troops"),
        ];
        for (text, key) in cases {
            assert_eq!(parse(text).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn time_spans() {
        for ok in ["15min", "1h 30min", "90", "2d", "1w"] {
            assert!(validate_time_span(ok).is_ok(), "{ok}");
        }
        for bad in ["", "soon", "-5min", "5 lightyears", "1h;reboot"] {
            assert!(validate_time_span(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::json;

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                prop::sample::select(vec![
                    "ok", "-x", "a b", "15min", "ssh", "gpg", "", "ext::x", "a..b", "web"
                ])
                .prop_map(|s| json!(s)),
                any::<i64>().prop_map(|n| json!(n)),
                any::<bool>().prop_map(|b| json!(b)),
                Just(Value::Null),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let remote =
                (scalar(), scalar(), prop::option::of(scalar())).prop_map(|(n, u, extra)| {
                    let mut map = json!({"name": n, "url": u});
                    if let Some(extra) = extra {
                        map["extra"] = extra;
                    }
                    map
                });
            prop_oneof![
                scalar(),
                prop::collection::vec(scalar(), 0..4).prop_map(Value::Array),
                prop::collection::vec(remote, 0..3).prop_map(Value::Array),
            ]
        }

        fn document() -> impl Strategy<Value = Value> {
            let key = prop::sample::select(vec![
                "remotes",
                "roles",
                "branch",
                "signatures",
                "allowed_signers",
                "gpg_keys",
                "pull_interval",
                "report",
                "bogus",
            ]);
            prop::collection::btree_map(key, value(), 0..6).prop_map(|keys| {
                json!({"troops": Value::Object(keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())})
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
                let _ = from_user_data(&text);
            }

            #[test]
            fn every_rejection_names_a_key_of_the_document(doc in document()) {
                let text = doc.to_string();
                if let Err(e) = parse(&text) {
                    let last = e.key.rsplit('.').next().unwrap_or_default();
                    let name = last.split('[').next().unwrap_or_default();
                    prop_assert!(e.key.starts_with("troops"), "{} for {}", e, text);
                    prop_assert!(text.contains(&format!("\"{name}\"")), "{} for {}", e, text);
                }
            }
        }
    }
}
