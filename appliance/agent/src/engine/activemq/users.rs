//! Users and groups as JAAS's `PropertiesLoginModule` reads them: `users.properties`
//! (`user=password`) and `groups.properties` (`group=user,user`), Java properties files
//! (ISO-8859-1 with `\uXXXX` escapes). The broker re-reads them on the next login after they
//! change, so user changes take no restart; the agent reads the same files back to report the
//! users the engine has.
//!
//! Passwords: JAAS's `PropertiesLoginModule` compares plain text (its only alternative, jasypt
//! `ENC(…)`, is reversible with a key that would sit on the same host: no protection, only
//! obfuscation). So `users.properties` (0600, owned by `activemq`) is the one place a password
//! is kept as such. The agent's store keeps only a salted hash: a password arrives with an
//! apply, is written here, and afterwards the file's value is kept while it matches the hash. A
//! value that does not match (changed behind FerryMQ's back) is reported as drift, and a user
//! removed from the file stays removed until the next apply brings the password again.

use super::config::{GROUP_ADMINS, GROUP_CONSOLE, GROUP_UNRESTRICTED, GROUP_USERS};
use super::AGENT_USER;
use crate::engine::{ObservedUsers, Placement};
use anyhow::{bail, Context, Result};
use ferrymq_api::agent::User;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const USERS: &str = "users.properties";
pub const GROUPS: &str = "groups.properties";

/// Refuses names the files cannot carry: group members are a comma-separated list, and a
/// member list written as `/…/` is taken for a regular expression.
pub fn check_names(users: &[User]) -> Result<()> {
    for u in users {
        let name = &u.username;
        if name.is_empty() || name.contains(',') || name.starts_with('/') {
            bail!("ActiveMQ user name {name:?} is empty, contains a comma or starts with /");
        }
        for g in &u.groups {
            ferrymq_api::validate::group_name(g)
                .map_err(|e| anyhow::anyhow!("user {name:?}: {e}"))?;
        }
    }
    Ok(())
}

fn header(p: &Placement) -> String {
    format!(
        "# Managed by FerryMQ for broker {}; changes here are overwritten.\n",
        escape_value(&p.broker_id)
    )
}

/// ISO-8859-1 bytes as text: every byte is the code point of the same value.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

/// The password to write for `u`: the one just applied (in memory), else the one already in
/// the file (`current`); None when neither has it (a user removed behind FerryMQ's back).
fn password_for<'a>(
    p: &'a Placement,
    u: &User,
    current: &'a [(String, String)],
) -> Option<&'a str> {
    if let Some(pw) = p.passwords.get(&u.username) {
        return Some(pw);
    }
    if !u.password.is_empty() {
        // A spec stored before passwords were hashed.
        return p
            .users
            .iter()
            .find(|x| x.username == u.username)
            .map(|x| x.password.as_str());
    }
    current
        .iter()
        .find(|(k, _)| *k == u.username)
        .map(|(_, v)| v.as_str())
}

/// The spec's users, then the agent's own (it reads the broker's statistics for metrics; it is
/// never reported as a broker user).
pub fn users_properties(p: &Placement, current: &[(String, String)]) -> String {
    let mut out = header(p);
    let _ = writeln!(
        out,
        "{}={}",
        escape_key(AGENT_USER),
        escape_value(&p.agent_password)
    );
    for u in &p.users {
        if let Some(password) = password_for(p, u, current) {
            let _ = writeln!(
                out,
                "{}={}",
                escape_key(&u.username),
                escape_value(password)
            );
        }
    }
    out
}

/// The spec's own group names (not the ones FerryMQ makes), sorted.
pub fn group_names(users: &[User]) -> Vec<String> {
    let mut names: Vec<String> = users
        .iter()
        .flat_map(|u| u.groups.iter().cloned())
        .filter(|g| g != GROUP_ADMINS)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `admins` (asked for), `console` (console access), `unrestricted` (no group of one's own),
/// `users` (everyone), then the spec's own groups in name order.
pub fn groups_properties(p: &Placement) -> String {
    let mut admins: Vec<&str> = vec![AGENT_USER];
    let mut console: Vec<&str> = vec![];
    let mut unrestricted: Vec<&str> = vec![];
    let mut everyone: Vec<&str> = vec![];
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for u in &p.users {
        let name = u.username.as_str();
        add(&mut everyone, name);
        if u.console_access {
            add(&mut console, name);
        }
        if u.groups.iter().all(|g| g == GROUP_ADMINS) {
            add(&mut unrestricted, name);
        }
        for g in &u.groups {
            match g.as_str() {
                GROUP_ADMINS => add(&mut admins, name),
                g => add(groups.entry(g).or_default(), name),
            }
        }
    }
    let mut out = header(p);
    for (group, members) in [
        (GROUP_ADMINS, &admins),
        (GROUP_CONSOLE, &console),
        (GROUP_UNRESTRICTED, &unrestricted),
        (GROUP_USERS, &everyone),
    ]
    .into_iter()
    .chain(groups.iter().map(|(g, m)| (*g, m)))
    {
        if !members.is_empty() {
            let _ = writeln!(
                out,
                "{}={}",
                escape_key(group),
                escape_value(&members.join(","))
            );
        }
    }
    out
}

fn add<'a>(members: &mut Vec<&'a str>, name: &'a str) {
    if !members.contains(&name) {
        members.push(name);
    }
}

/// The users of the files the engine reads, with passwords compared to the spec's.
pub fn observe(users: &Path, groups: &Path, desired: &[User]) -> Result<ObservedUsers> {
    let read = |path: &Path| {
        std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map(|bytes| latin1(&bytes))
    };
    let passwords = parse(&read(users)?);
    let groups: Vec<(String, Vec<String>)> = parse(&read(groups)?)
        .into_iter()
        .map(|(g, members)| {
            let members = members
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            (g, members)
        })
        .collect();
    let mut observed = ObservedUsers::default();
    for (name, password) in passwords {
        if name == AGENT_USER {
            continue;
        }
        if let Some(want) = desired.iter().find(|u| u.username == name) {
            let same = if want.password_hash.is_empty() {
                want.password == password
            } else {
                crate::password::verify(&want.password_hash, &password)
            };
            if !same {
                observed.password_drift.push(name.clone());
            }
        }
        let member_of = |g: &(String, Vec<String>)| g.1.contains(&name);
        observed.users.push(User {
            username: name.clone(),
            console_access: groups.iter().any(|g| g.0 == GROUP_CONSOLE && member_of(g)),
            groups: groups
                .iter()
                .filter(|g| {
                    ![GROUP_CONSOLE, GROUP_UNRESTRICTED, GROUP_USERS].contains(&g.0.as_str())
                        && member_of(g)
                })
                .map(|g| g.0.clone())
                .collect(),
            ..Default::default()
        });
    }
    Ok(observed)
}

/// A key as `java.util.Properties.store` writes it.
pub fn escape_key(s: &str) -> String {
    escape(s, true)
}

/// A value as `java.util.Properties.store` writes it (only a leading space is escaped).
pub fn escape_value(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, is_key: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            ' ' if is_key || i == 0 => out.push_str("\\ "),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
    out
}

/// Key/value pairs of a properties file in file order, as `java.util.Properties.load` reads
/// them: comments, `=`/`:`/blank separators, escapes and continuation lines.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![];
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    while let Some(line) = lines.next() {
        let mut logical = line.trim_start_matches([' ', '\t', '\x0c']).to_string();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some(next) => logical.push_str(next.trim_start_matches([' ', '\t', '\x0c'])),
                None => break,
            }
        }
        let (key, value) = split_key(&logical);
        let key = unescape(key);
        let value = unescape(value);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => out.push((key, value)),
        }
    }
    out
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Splits a logical line at the first unescaped `=`, `:` or blank.
fn split_key(line: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' | '\x0c' => {
                let key = &line[..i];
                let mut rest = line[i..].trim_start_matches([' ', '\t', '\x0c']);
                if c == '=' || c == ':' {
                    rest = &line[i + 1..];
                } else if let Some(r) = rest.strip_prefix(['=', ':']) {
                    rest = r;
                }
                return (key, rest.trim_start_matches([' ', '\t', '\x0c']));
            }
            _ => {}
        }
    }
    (line, "")
}

fn unescape(s: &str) -> String {
    let mut units: Vec<u16> = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
            continue;
        }
        match chars.next() {
            Some('t') => units.push(u16::from(b'\t')),
            Some('n') => units.push(u16::from(b'\n')),
            Some('r') => units.push(u16::from(b'\r')),
            Some('f') => units.push(0x0c),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Ok(unit) = u16::from_str_radix(&hex, 16) {
                    units.push(unit);
                }
            }
            Some(other) => {
                let mut buf = [0u16; 2];
                units.extend_from_slice(other.encode_utf16(&mut buf));
            }
            None => {}
        }
    }
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{placement, user};
    use super::*;

    #[test]
    fn users_file_is_user_equals_password() {
        let p = placement("mq.m5.large");
        assert_eq!(
            users_properties(&p, &[]),
            "# Managed by FerryMQ for broker b-1; changes here are overwritten.\n\
             ferrymq-agent=agent-secret\n\
             admin-user=admin-password-1\n\
             app=app-password-12\n"
        );
    }

    #[test]
    fn without_the_password_in_memory_the_file_keeps_its_own() {
        let mut p = placement("mq.m5.large");
        // As stored: hashes only, and no apply since the agent started.
        for u in &mut p.users {
            u.password_hash = crate::password::hash(&u.password).expect("hash");
            u.password.clear();
        }
        p.passwords.clear();
        let current = vec![("admin-user".to_string(), "admin-password-1".to_string())];
        // `app` was removed from the file behind FerryMQ's back: it stays removed (drift)
        // until an apply brings its password again.
        assert_eq!(
            users_properties(&p, &current),
            "# Managed by FerryMQ for broker b-1; changes here are overwritten.\n\
             ferrymq-agent=agent-secret\n\
             admin-user=admin-password-1\n"
        );
        p.passwords.insert("app".into(), "app-password-12".into());
        assert!(users_properties(&p, &current).ends_with("app=app-password-12\n"));
    }

    #[test]
    fn groups_file_has_admins_users_and_spec_groups() {
        let mut p = placement("mq.m5.large");
        p.users
            .push(user("ops", "ops-password-123", true, &["orders", "audit"]));
        p.users
            .push(user("root", "root-password-12", false, &["admins"]));
        assert_eq!(
            groups_properties(&p),
            "# Managed by FerryMQ for broker b-1; changes here are overwritten.\n\
             admins=ferrymq-agent,root\n\
             console=admin-user,ops\n\
             unrestricted=admin-user,root\n\
             users=admin-user,app,ops,root\n\
             audit=ops\n\
             orders=app,ops\n"
        );
        assert_eq!(group_names(&p.users), ["audit", "orders"]);
        p.users.pop();
        // No console user: the agent alone in admins.
        p.users.retain(|u| !u.console_access);
        assert_eq!(
            groups_properties(&p),
            "# Managed by FerryMQ for broker b-1; changes here are overwritten.\n\
             admins=ferrymq-agent\n\
             users=app\n\
             orders=app\n"
        );
    }

    #[test]
    fn odd_passwords_round_trip() {
        let passwords = [
            " leading space and trailing ",
            "back\\slash#hash!bang",
            "tab\tand\nnewline",
            "ünïcödé-€-😀-pass",
            "=starts-with-equals",
        ];
        let mut p = placement("mq.m5.large");
        p.users = passwords
            .iter()
            .enumerate()
            .map(|(i, pw)| user(&format!("u{i} x"), pw, false, &[]))
            .collect();
        let text = users_properties(&p, &[]);
        assert!(text.is_ascii(), "{text}");
        let parsed = parse(&text);
        let want: Vec<(String, String)> = [(AGENT_USER.to_string(), p.agent_password.clone())]
            .into_iter()
            .chain(
                p.users
                    .iter()
                    .map(|u| (u.username.clone(), u.password.clone())),
            )
            .collect();
        assert_eq!(parsed, want);
    }

    #[test]
    fn parses_what_java_writes_by_hand() {
        let text = "# comment\n! other comment\n\n  a = 1\nb:2\nc 3\nd\\\n    continued\n\
                    e=\\u0041\\u00e9\nf=x\\\\\ng\nempty=\r\nb=again\n";
        assert_eq!(
            parse(text),
            [
                ("a", "1"),
                ("b", "again"),
                ("c", "3"),
                ("dcontinued", ""),
                ("e", "Aé"),
                ("f", "x\\"),
                ("g", ""),
                ("empty", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn observes_users_console_access_groups_and_drift() {
        let dir = std::env::temp_dir().join(format!("ferrymq-amq-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut p = placement("mq.m5.large");
        p.users
            .push(user("ops", "ops-password-123", false, &["orders"]));
        std::fs::write(dir.join(USERS), users_properties(&p, &[])).expect("write");
        std::fs::write(dir.join(GROUPS), groups_properties(&p)).expect("write");

        let mut desired = p.users.clone();
        desired[1].password = "changed-elsewhere".into();
        desired.push(user("new-user", "new-password-1", false, &[]));
        let seen = observe(&dir.join(USERS), &dir.join(GROUPS), &desired).expect("observe");
        assert_eq!(
            seen.users,
            [
                user("admin-user", "", true, &[]),
                user("app", "", false, &["orders"]),
                user("ops", "", false, &["orders"]),
            ]
        );
        assert_eq!(seen.password_drift, ["app"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn names_the_files_cannot_carry_are_refused() {
        assert!(check_names(&[user("a,b", "password-1234", false, &[])]).is_err());
        assert!(check_names(&[user("", "password-1234", false, &[])]).is_err());
        assert!(check_names(&[user("/re/", "password-1234", false, &[])]).is_err());
        assert!(check_names(&[user("ok", "password-1234", false, &[""])]).is_err());
        assert!(check_names(&[user("ok.user~1", "password-1234", true, &["g"])]).is_ok());
    }
}
