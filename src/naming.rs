//! Naming: from an instance's tags and security groups to a DNS name.
//!
//! Pure code, no I/O. Tag values are untrusted (anyone with `ec2:CreateTags`
//! writes them), so the rule that turns a value into a name is fixed and
//! total: whatever the input, the output is a valid LDH name or a reported
//! skip. The rule, also in the README:
//!
//! 1. lowercase ASCII letters;
//! 2. `.` separates labels; empty labels (from `..` or a leading or trailing
//!    dot) are dropped;
//! 3. in each label, every run of characters outside `[a-z0-9-]` becomes one
//!    `-`;
//! 4. leading and trailing `-` are trimmed; a label is cut to 63 octets;
//! 5. a value that leaves no label, a name longer than the zone allows (253
//!    octets in all), or a single label shaped like an instance id
//!    (`i-` and hex digits, which would shadow that instance's own name) is
//!    skipped, and the instance falls through to its next preference.
//!
//! Every instance is also named `<instance-id>.<zone>`, which never
//! collides and never changes.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use crate::inventory::Instance;
use crate::statics::StaticRecords;

/// The longest label DNS allows, in octets.
pub const MAX_LABEL: usize = 63;
/// The longest name DNS allows in presentation form without the final dot.
pub const MAX_NAME: usize = 253;

/// Where a name may come from, in the order of the preference list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The value of the tag with this exact key.
    Tag(String),
    /// The name of the instance's first security group.
    SecurityGroup,
    /// The instance id; every instance has this name, whatever the list says.
    InstanceId,
    /// A name built from several values, e.g. `{tag:Role}-{tag:Env}`.
    Template(Template),
}

/// A value a template takes from an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `{tag:KEY}`: the value of that tag.
    Tag(String),
    /// `{id}`: the instance id.
    Id,
    /// `{az}`: the availability zone.
    Az,
    /// `{region}`.
    Region,
    /// `{vpc}`: the VPC id.
    Vpc,
    /// `{type}`: the instance type.
    Type,
    /// `{account}`: the owning account's id.
    Account,
    /// `{sg}`: the first security group's name.
    Sg,
}

impl Field {
    /// The placeholder names, as the config error lists them.
    const NAMES: &'static str = "{tag:KEY}, {id}, {az}, {region}, {vpc}, {type}, {account}, {sg}";

    fn parse(inner: &str) -> Result<Field, String> {
        if let Some(key) = inner.strip_prefix("tag:") {
            return if key.is_empty() {
                Err("{tag:} needs a tag key, e.g. {tag:Name}".to_string())
            } else {
                Ok(Field::Tag(key.to_string()))
            };
        }
        Ok(match inner {
            "id" => Field::Id,
            "az" => Field::Az,
            "region" => Field::Region,
            "vpc" => Field::Vpc,
            "type" => Field::Type,
            "account" => Field::Account,
            "sg" => Field::Sg,
            _ => {
                return Err(format!(
                    "unknown placeholder {{{inner}}}: expected one of {}",
                    Field::NAMES
                ))
            }
        })
    }

    /// This field's value for `instance`, if it has one.
    fn value<'i>(&self, instance: &'i Instance) -> Option<&'i str> {
        match self {
            Field::Tag(key) => instance.tags.get(key),
            Field::Id => Some(instance.id.as_str()),
            Field::Az => instance.availability_zone.as_deref(),
            Field::Region => instance.region.as_deref(),
            Field::Vpc => instance.vpc_id.as_deref(),
            Field::Type => instance.instance_type.as_deref(),
            Field::Account => instance.account.as_deref(),
            Field::Sg => instance.security_groups.first().map(String::as_str),
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    /// Text as written (checked at load: letters, digits, `-` and `.`).
    Literal(String),
    /// A value, sanitised on its own into one label's worth of text.
    Field(Field),
}

/// A naming rule built from literal text and placeholders, such as
/// `{tag:Role}-{tag:Env}` or `{tag:Name}.{az}`.
///
/// It yields a name only when every placeholder has a value that leaves
/// something after sanitising; otherwise the next rule is tried. Each
/// value is sanitised on its own, with `.` turned into `-` like any other
/// character outside `[a-z0-9-]`: a tag cannot add a label or a label
/// separator, only the template's own text can.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Template {
    /// As written in the config.
    text: String,
    /// Its pieces, in order.
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; the error says what is wrong, quoting the template.
    pub fn parse(text: &str) -> Result<Template, String> {
        let fail = |why: String| format!("template {text:?}: {why}");
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(at) if rest.as_bytes()[at] == b'}' => {
                    return Err(fail("a '}' without its '{'".to_string()));
                }
                Some(0) => {
                    let close = rest
                        .find('}')
                        .ok_or_else(|| fail("a '{' is never closed".to_string()))?;
                    let inner = &rest[1..close];
                    if inner.contains('{') {
                        return Err(fail("a '{' inside a placeholder".to_string()));
                    }
                    parts.push(Part::Field(Field::parse(inner).map_err(fail)?));
                    rest = &rest[close + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if let Some(c) = literal
                        .chars()
                        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
                    {
                        return Err(fail(format!(
                            "{c:?} in its text: only letters, digits, '-' and '.' may stand between placeholders"
                        )));
                    }
                    parts.push(Part::Literal(literal.to_ascii_lowercase()));
                    rest = &rest[end..];
                }
            }
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(fail(
                "no placeholder: a fixed name would be the same for every instance".to_string(),
            ));
        }
        if text.starts_with('.') || text.ends_with('.') || text.contains("..") {
            return Err(fail(
                "an empty label: no '.' at either end, and never two in a row".to_string(),
            ));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The raw text this template makes for `instance` (values as found,
    /// for the report), and the name before its final check: `None` when
    /// a placeholder has no value. A value that sanitises to nothing is an
    /// `Err` with it.
    fn render(&self, instance: &Instance) -> Option<Result<(String, String), String>> {
        let (mut raw, mut name) = (String::new(), String::new());
        for part in &self.parts {
            match part {
                Part::Literal(text) => {
                    raw.push_str(text);
                    name.push_str(text);
                }
                Part::Field(field) => {
                    let value = field.value(instance)?;
                    let clean = sanitize_value(value);
                    if clean.is_empty() {
                        return Some(Err(value.to_string()));
                    }
                    raw.push_str(value);
                    name.push_str(&clean);
                }
            }
        }
        Some(Ok((raw, name)))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A template's value on its own: lowercase, every run of characters
/// outside `[a-z0-9-]` (`.` included) one `-`, trimmed of `-`, at most a
/// label long. Empty when nothing is left.
fn sanitize_value(value: &str) -> String {
    sanitize_label(value)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Tag(key) => write!(f, "tag:{key}"),
            Rule::SecurityGroup => f.write_str("security-group"),
            Rule::InstanceId => f.write_str("instance-id"),
            Rule::Template(t) => t.fmt(f),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Rule {
    type Err = String;

    /// Parses `tag:KEY`, `security-group`, or a template (anything with
    /// a brace).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "security-group" {
            return Ok(Rule::SecurityGroup);
        }
        if s.contains(['{', '}']) {
            return Template::parse(s).map(Rule::Template);
        }
        match s.strip_prefix("tag:") {
            Some(key) if !key.is_empty() => Ok(Rule::Tag(key.to_string())),
            Some(_) => Err("\"tag:\" needs a tag key, e.g. \"tag:Name\"".to_string()),
            None => Err(format!(
                "unknown naming rule {s:?}: expected \"tag:KEY\", \"security-group\" or a template such as \"{{tag:Role}}-{{tag:Env}}\""
            )),
        }
    }
}

/// Why a value gave no name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The value is the empty string.
    Empty,
    /// Nothing of the value survives sanitising (only dashes, symbols, ...).
    NothingValid,
    /// The sanitised name is longer than the zone leaves room for.
    TooLong {
        /// Length of the sanitised name.
        len: usize,
        /// The most the zone allows.
        max: usize,
    },
    /// A single label shaped like an instance id would shadow that instance.
    LooksLikeInstanceId,
    /// The value is the zone itself, which names no instance.
    IsTheZone,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Empty => f.write_str("empty value"),
            SkipReason::NothingValid => f.write_str("no letter or digit survives sanitising"),
            SkipReason::TooLong { len, max } => {
                write!(
                    f,
                    "name of {len} octets is longer than the {max} the zone allows"
                )
            }
            SkipReason::LooksLikeInstanceId => {
                f.write_str("looks like an instance id, which is reserved for that instance")
            }
            SkipReason::IsTheZone => f.write_str("names the zone itself, not a host in it"),
        }
    }
}

/// A value that was changed to become a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The instance whose value it was.
    pub instance_id: String,
    /// Where the value came from.
    pub rule: Rule,
    /// The value as found (untrusted; escape before printing).
    pub value: String,
    /// The name it became, relative to the zone.
    pub name: String,
}

/// A value that gave no name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The instance whose value it was.
    pub instance_id: String,
    /// Where the value came from.
    pub rule: Rule,
    /// The value as found (untrusted; escape before printing).
    pub value: String,
    /// Why it gave no name.
    pub reason: SkipReason,
}

/// Everything naming changed or refused, for `fleetdns list` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NamingReport {
    /// Values that became a different-looking name.
    pub rewrites: Vec<Rewrite>,
    /// Values that became no name.
    pub skips: Vec<Skip>,
    /// Instances not served because they are not running.
    pub not_running: usize,
    /// Instances not served because their id is not a valid instance id.
    pub bad_ids: Vec<String>,
}

impl NamingReport {
    /// Records what `rule` made of `value` for `instance`: a rewrite when
    /// the name differs from the value, a skip when there is none; the
    /// name, if any.
    fn record(
        &mut self,
        instance: &Instance,
        rule: &Rule,
        value: &str,
        sanitized: Result<String, SkipReason>,
    ) -> Option<String> {
        match sanitized {
            Ok(name) => {
                if name != value {
                    self.rewrites.push(Rewrite {
                        instance_id: instance.id.clone(),
                        rule: rule.clone(),
                        value: value.to_string(),
                        name: name.clone(),
                    });
                }
                Some(name)
            }
            Err(reason) => {
                self.skips.push(Skip {
                    instance_id: instance.id.clone(),
                    rule: rule.clone(),
                    value: value.to_string(),
                    reason,
                });
                None
            }
        }
    }
}

/// The name chosen for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The name relative to the zone, e.g. `web-1` or `db.primary`.
    pub name: String,
    /// The rule that gave it.
    pub rule: Rule,
}

/// The naming policy: a preference list and the room the zone leaves.
#[derive(Debug, Clone)]
pub struct Naming {
    /// Rules tried in order; the first that yields a valid name wins.
    prefer: Vec<Rule>,
    /// Rules of extra names: each gives every name it can.
    aliases: Vec<Rule>,
    /// Rules of group names: each gives one name, shared by every member.
    groups: Vec<Rule>,
    /// The longest relative name that still fits under the zone.
    max_len: usize,
    /// The zone, lowercase, without the final dot: a value that already
    /// ends in it (`web-1.fleet.internal`) means the name before it.
    zone: String,
    /// Static records (`static_records`): names that are not instances',
    /// and that win where an instance's name equals one.
    statics: Arc<StaticRecords>,
}

impl Naming {
    /// A policy for names under `zone` (presentation form, with or without
    /// the final dot).
    pub fn new(prefer: Vec<Rule>, zone: &str) -> Self {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        // name + "." + zone must stay within MAX_NAME.
        let max_len = MAX_NAME.saturating_sub(zone.len() + 1);
        Self {
            prefer,
            aliases: Vec::new(),
            groups: Vec::new(),
            max_len,
            zone,
            statics: Arc::default(),
        }
    }

    /// This policy with the static records `statics` (`static_records`).
    pub fn with_statics(mut self, statics: Arc<StaticRecords>) -> Self {
        self.statics = statics;
        self
    }

    /// The static records.
    pub fn statics(&self) -> &Arc<StaticRecords> {
        &self.statics
    }

    /// Whether `other` names instances differently (rules, aliases, groups
    /// or zone; the static records aside, which a reload reports apart).
    pub fn rules_differ(&self, other: &Naming) -> bool {
        self.prefer != other.prefer
            || self.aliases != other.aliases
            || self.groups != other.groups
            || self.max_len != other.max_len
            || self.zone != other.zone
    }

    /// This policy with `rules` for extra names (`naming.aliases`).
    pub fn with_aliases(mut self, rules: Vec<Rule>) -> Self {
        self.aliases = rules;
        self
    }

    /// The alias rules.
    pub fn alias_rules(&self) -> &[Rule] {
        &self.aliases
    }

    /// This policy with `rules` for group names (`naming.groups`).
    pub fn with_groups(mut self, rules: Vec<Rule>) -> Self {
        self.groups = rules;
        self
    }

    /// The group rules.
    pub fn group_rules(&self) -> &[Rule] {
        &self.groups
    }

    /// The default preference list: the `Name` tag, then the first security group.
    pub fn default_rules() -> Vec<Rule> {
        vec![Rule::Tag("Name".to_string()), Rule::SecurityGroup]
    }

    /// The rules in order.
    pub fn rules(&self) -> &[Rule] {
        &self.prefer
    }

    /// Chooses the primary name of `instance`, recording rewrites and skips.
    ///
    /// `None` means no rule gave a name; the instance still has its
    /// instance-id name.
    pub fn choose(&self, instance: &Instance, report: &mut NamingReport) -> Option<Choice> {
        for rule in &self.prefer {
            // The value as found (borrowed: this runs for every instance
            // of every build), and what it gives.
            let (value, sanitized): (Cow<'_, str>, _) = match rule {
                Rule::Tag(key) => match instance.tags.get(key) {
                    Some(v) => (v.into(), self.sanitize_in_zone(v)),
                    None => continue,
                },
                Rule::SecurityGroup => match instance.security_groups.first() {
                    Some(v) => (v.as_str().into(), self.sanitize_in_zone(v)),
                    None => continue,
                },
                Rule::InstanceId => continue,
                Rule::Template(template) => match template.render(instance) {
                    None => continue,
                    Some(Err(value)) => (value.into(), Err(SkipReason::NothingValid)),
                    Some(Ok((raw, name))) => {
                        let sanitized = self.sanitize_in_zone(&name);
                        (raw.into(), sanitized)
                    }
                },
            };
            let value = &*value;
            if let Some(name) = report.record(instance, rule, value, sanitized) {
                return Some(Choice {
                    name,
                    rule: rule.clone(),
                });
            }
        }
        None
    }
}

impl Naming {
    /// The extra names of `instance` (`naming.aliases`), recording
    /// rewrites and skips: every name each rule gives, in rule order,
    /// without `primary` and without repeats. A tag may list several
    /// names, separated by commas or whitespace; each is sanitised and
    /// skipped on its own, by the rules of a primary name (so an alias is
    /// never shaped like an instance id).
    pub fn aliases(
        &self,
        instance: &Instance,
        primary: Option<&str>,
        report: &mut NamingReport,
    ) -> Vec<Choice> {
        let taken: Vec<&str> = primary.into_iter().collect();
        self.extra_names(&self.aliases, true, instance, &taken, report)
    }

    /// The group names of `instance` (`naming.groups`): one per rule that
    /// gives one (a tag's whole value is one name), without repeats and
    /// without the names in `taken` (its primary name and aliases, which
    /// it answers for already), recording rewrites and skips.
    pub fn groups(
        &self,
        instance: &Instance,
        taken: &[&str],
        report: &mut NamingReport,
    ) -> Vec<Choice> {
        self.extra_names(&self.groups, false, instance, taken, report)
    }

    /// Every name `rules` give `instance`, each value sanitised by the
    /// rules of a primary name; a tag lists several when `split`.
    fn extra_names(
        &self,
        rules: &[Rule],
        split: bool,
        instance: &Instance,
        taken: &[&str],
        report: &mut NamingReport,
    ) -> Vec<Choice> {
        let mut names: Vec<Choice> = Vec::new();
        for rule in rules {
            let mut one = |value: &str, sanitized: Result<String, SkipReason>| {
                if let Some(name) = report.record(instance, rule, value, sanitized) {
                    if !taken.contains(&name.as_str()) && !names.iter().any(|c| c.name == name) {
                        names.push(Choice {
                            name,
                            rule: rule.clone(),
                        });
                    }
                }
            };
            match rule {
                Rule::Tag(key) => {
                    let Some(list) = instance.tags.get(key) else {
                        continue;
                    };
                    if !split {
                        one(list, self.sanitize_in_zone(list));
                        continue;
                    }
                    for value in list
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|v| !v.is_empty())
                    {
                        one(value, self.sanitize_in_zone(value));
                    }
                }
                Rule::SecurityGroup => {
                    if let Some(group) = instance.security_groups.first() {
                        one(group, self.sanitize_in_zone(group));
                    }
                }
                Rule::InstanceId => {}
                Rule::Template(template) => match template.render(instance) {
                    None => {}
                    Some(Err(value)) => one(&value, Err(SkipReason::NothingValid)),
                    Some(Ok((raw, name))) => one(&raw, self.sanitize_in_zone(&name)),
                },
            }
        }
        names
    }

    /// [`sanitize`], then the zone taken off the end: people put the full
    /// name in a tag (`web-1.fleet.internal`), which must not become
    /// `web-1.fleet.internal.fleet.internal.`. The length limit applies to
    /// what is left. The change shows in `list` as a rewrite.
    fn sanitize_in_zone(&self, value: &str) -> Result<String, SkipReason> {
        // Room for the zone too, which may be about to be taken off.
        let name = sanitize(value, self.max_len + self.zone.len() + 1)?;
        if name == self.zone {
            return Err(SkipReason::IsTheZone);
        }
        let relative = name
            .strip_suffix(self.zone.as_str())
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| !n.is_empty())
            .unwrap_or(&name);
        if relative.len() > self.max_len {
            return Err(SkipReason::TooLong {
                len: relative.len(),
                max: self.max_len,
            });
        }
        if is_instance_id(relative) {
            return Err(SkipReason::LooksLikeInstanceId);
        }
        Ok(relative.to_string())
    }
}

/// The ordinals of a group's members (`<n>.<group>`), given the members
/// in instance-id order and the ordinal each had before (`previous`): a
/// member keeps its ordinal as long as it stays; newcomers, in id order,
/// take the lowest free ordinals from 1. So the first assignment is in id
/// order, a member replaced in the middle leaves a gap that the next
/// newcomer fills, and an ordinal never moves to another member while its
/// holder stays. Two members claiming one previous ordinal (a damaged
/// record) keep it for the first, in id order; the other is a newcomer.
pub fn assign_ordinals(members: &[&str], previous: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
    let mut taken = std::collections::BTreeSet::new();
    let mut ordinals: Vec<Option<u32>> = members
        .iter()
        .map(|id| previous(id).filter(|&n| n > 0 && taken.insert(n)))
        .collect();
    let mut next = 1u32;
    for ordinal in ordinals.iter_mut().filter(|o| o.is_none()) {
        while taken.contains(&next) {
            next += 1;
        }
        taken.insert(next);
        *ordinal = Some(next);
    }
    ordinals.into_iter().map(|o| o.unwrap_or(next)).collect()
}

/// Turns any string into a relative DNS name of at most `max_len` octets,
/// or says why it cannot. See the module documentation for the rule.
pub fn sanitize(value: &str, max_len: usize) -> Result<String, SkipReason> {
    if value.is_empty() {
        return Err(SkipReason::Empty);
    }
    let mut name = String::with_capacity(value.len().min(MAX_NAME));
    for raw in value.split('.') {
        let label = sanitize_label(raw);
        if label.is_empty() {
            continue;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&label);
    }
    if name.is_empty() {
        return Err(SkipReason::NothingValid);
    }
    if name.len() > max_len {
        return Err(SkipReason::TooLong {
            len: name.len(),
            max: max_len,
        });
    }
    if is_instance_id(&name) {
        return Err(SkipReason::LooksLikeInstanceId);
    }
    Ok(name)
}

/// One label: lowercase, runs of other characters to `-`, trimmed, cut to 63.
fn sanitize_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_LABEL + 1));
    let mut in_run = false;
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    let trimmed = out.trim_matches('-');
    let cut = &trimmed[..trimmed.len().min(MAX_LABEL)];
    cut.trim_end_matches('-').to_string()
}

/// Whether `name` is one label shaped like an EC2 instance id (`i-` + hex).
pub fn is_instance_id(name: &str) -> bool {
    match name.strip_prefix("i-") {
        Some(hex) => !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Whether `name` is a valid relative LDH name: what every name fleetdns
/// serves must satisfy. Used by tests and as a last guard when building.
pub fn is_valid_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 253 - 15; // room under "fleet.internal"

    fn ok(value: &str) -> String {
        sanitize(value, MAX).unwrap()
    }

    #[test]
    fn plain_names_pass_unchanged() {
        assert_eq!(ok("web-1"), "web-1");
        assert_eq!(ok("db.primary"), "db.primary");
        assert_eq!(ok("123"), "123");
    }

    #[test]
    fn uppercase_is_lowered() {
        assert_eq!(ok("Web-1"), "web-1");
        assert_eq!(ok("API"), "api");
    }

    #[test]
    fn runs_of_other_characters_become_one_dash() {
        assert_eq!(ok("Web Server 3"), "web-server-3");
        assert_eq!(ok("worker_01"), "worker-01");
        assert_eq!(ok("a  \t b"), "a-b");
        assert_eq!(ok("a#$%b"), "a-b");
        // dashes the user wrote are kept as they are
        assert_eq!(ok("a--b"), "a--b");
    }

    #[test]
    fn dots_separate_labels_and_empty_labels_vanish() {
        assert_eq!(ok("a..b"), "a.b");
        assert_eq!(ok(".a.b."), "a.b");
        assert_eq!(ok("a.-.b"), "a.b");
        assert_eq!(ok("a. .b"), "a.b");
    }

    #[test]
    fn leading_and_trailing_dashes_are_trimmed() {
        assert_eq!(ok("-web-"), "web");
        assert_eq!(ok("  web  "), "web");
        assert_eq!(ok("--a.-b-"), "a.b");
    }

    #[test]
    fn newline_and_hash_cannot_inject_anything() {
        let name = ok("evil\nname # injected 127.0.0.1 localhost");
        assert_eq!(name, "evil-name-injected-127.0.0.1-localhost");
        assert!(is_valid_name(&name, MAX));
    }

    #[test]
    fn a_value_holding_the_full_name_loses_the_zone_and_says_so() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
        let choose = |value: &str| {
            let instance = crate::inventory::test_instance("i-0a", Some(value), &["10.0.0.1"]);
            let mut report = NamingReport::default();
            let choice = naming.choose(&instance, &mut report);
            (choice.map(|c| c.name), report)
        };
        let (name, report) = choose("Web-1.Fleet.Internal.");
        assert_eq!(name.as_deref(), Some("web-1"));
        assert_eq!(report.rewrites[0].name, "web-1");
        assert_eq!(report.rewrites[0].value, "Web-1.Fleet.Internal.");
        // only one zone comes off; a name that merely ends alike keeps it all
        assert_eq!(
            choose("x.fleet.internal.fleet.internal").0.as_deref(),
            Some("x.fleet.internal")
        );
        assert_eq!(
            choose("myfleet.internal").0.as_deref(),
            Some("myfleet.internal")
        );
        // the zone itself names nobody: the next rule (the security group) is tried
        let (name, report) = choose("fleet.internal");
        assert_eq!(report.skips[0].reason, SkipReason::IsTheZone);
        assert_ne!(name.as_deref(), Some(""));
        // and an instance id behind the zone is still reserved
        assert_eq!(
            choose("i-0abc.fleet.internal").1.skips[0].reason,
            SkipReason::LooksLikeInstanceId
        );
    }

    #[test]
    fn unicode_becomes_dashes() {
        assert_eq!(ok("Ünïcode Büro"), "n-code-b-ro");
        assert_eq!(sanitize("日本語", MAX), Err(SkipReason::NothingValid));
    }

    #[test]
    fn long_labels_are_cut_to_63() {
        let long = "a".repeat(300);
        assert_eq!(ok(&long), "a".repeat(63));
        // a cut that would end in a dash trims it
        let value = format!("{}-{}", "b".repeat(62), "c".repeat(10));
        assert_eq!(ok(&value), "b".repeat(62));
    }

    #[test]
    fn many_leading_dashes_do_not_hide_the_name() {
        assert_eq!(ok(&format!("{}abc", "-".repeat(200))), "abc");
    }

    #[test]
    fn too_long_names_are_skipped() {
        let value = vec!["abcdefghi"; 30].join(".");
        assert_eq!(value.len(), 299);
        assert_eq!(
            sanitize(&value, MAX),
            Err(SkipReason::TooLong { len: 299, max: MAX })
        );
        // exactly the maximum fits
        let exact = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(MAX - 3 * 64)
        );
        assert_eq!(exact.len(), MAX);
        assert_eq!(ok(&exact), exact);
    }

    #[test]
    fn values_with_nothing_valid_are_skipped() {
        assert_eq!(sanitize("", MAX), Err(SkipReason::Empty));
        assert_eq!(sanitize("---", MAX), Err(SkipReason::NothingValid));
        assert_eq!(sanitize("...", MAX), Err(SkipReason::NothingValid));
        assert_eq!(sanitize(" # ", MAX), Err(SkipReason::NothingValid));
        assert_eq!(sanitize("\n", MAX), Err(SkipReason::NothingValid));
    }

    #[test]
    fn instance_id_shaped_values_are_reserved() {
        assert_eq!(
            sanitize("i-0123456789abcdef0", MAX),
            Err(SkipReason::LooksLikeInstanceId)
        );
        assert_eq!(
            sanitize("I-0ABC", MAX),
            Err(SkipReason::LooksLikeInstanceId)
        );
        // only a single label is reserved; other names that start with i- are fine
        assert_eq!(ok("i-0abc.web"), "i-0abc.web");
        assert_eq!(ok("i-web"), "i-web");
    }

    fn instance(tags: &[(&str, &str)], groups: &[&str]) -> Instance {
        Instance {
            id: "i-0123456789abcdef0".into(),
            state: "running".into(),
            private_ipv4: vec!["10.0.0.1".parse().unwrap()],
            ipv6: vec![],
            tags: tags.iter().copied().collect(),
            security_groups: groups.iter().map(|g| g.to_string()).collect(),
            launch_time: None,
            region: None,
            vpc_id: None,
            availability_zone: None,
            instance_type: None,
            account: None,
        }
    }

    #[test]
    fn preference_order_and_fall_through() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
        let mut report = NamingReport::default();

        let c = naming.choose(&instance(&[("Name", "web-1")], &["web"]), &mut report);
        assert_eq!(
            c,
            Some(Choice {
                name: "web-1".into(),
                rule: Rule::Tag("Name".into())
            })
        );

        let c = naming.choose(
            &instance(&[("Env", "prod")], &["batch-workers", "default"]),
            &mut report,
        );
        assert_eq!(
            c,
            Some(Choice {
                name: "batch-workers".into(),
                rule: Rule::SecurityGroup
            })
        );
        assert!(report.skips.is_empty() && report.rewrites.is_empty());

        // a Name that gives nothing falls through to the security group, with a skip
        let c = naming.choose(&instance(&[("Name", "---")], &["cache"]), &mut report);
        assert_eq!(c.unwrap().name, "cache");
        assert_eq!(report.skips.len(), 1);
        assert_eq!(report.skips[0].reason, SkipReason::NothingValid);
        assert_eq!(report.skips[0].value, "---");

        // nothing at all: no primary name
        let c = naming.choose(&instance(&[("Name", "")], &[]), &mut report);
        assert_eq!(c, None);
        assert_eq!(report.skips[1].reason, SkipReason::Empty);
    }

    #[test]
    fn rewrites_are_reported_with_the_original_value() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal");
        let mut report = NamingReport::default();
        naming.choose(&instance(&[("Name", "Web Server 3")], &[]), &mut report);
        assert_eq!(
            report.rewrites,
            [Rewrite {
                instance_id: "i-0123456789abcdef0".into(),
                rule: Rule::Tag("Name".into()),
                value: "Web Server 3".into(),
                name: "web-server-3".into(),
            }]
        );
    }

    #[test]
    fn custom_tag_rules() {
        let rules = vec!["tag:Hostname".parse().unwrap(), "tag:Name".parse().unwrap()];
        let naming = Naming::new(rules, "fleet.internal");
        let mut report = NamingReport::default();
        let c = naming.choose(
            &instance(&[("Name", "n"), ("Hostname", "h")], &["sg"]),
            &mut report,
        );
        assert_eq!(c.unwrap().name, "h");
        // the security group is not in this list, so it is never used
        assert_eq!(naming.choose(&instance(&[], &["sg"]), &mut report), None);
    }

    #[test]
    fn rule_parsing() {
        assert_eq!("tag:Name".parse::<Rule>(), Ok(Rule::Tag("Name".into())));
        assert_eq!("security-group".parse::<Rule>(), Ok(Rule::SecurityGroup));
        assert!("tag:".parse::<Rule>().is_err());
        assert!("name"
            .parse::<Rule>()
            .unwrap_err()
            .contains("unknown naming rule"));
        assert_eq!(Rule::Tag("Env".into()).to_string(), "tag:Env");
    }

    #[test]
    fn a_long_zone_leaves_less_room() {
        let zone = format!("{}.{}.{}.", "z".repeat(63), "y".repeat(63), "x".repeat(63));
        let naming = Naming::new(Naming::default_rules(), &zone);
        let mut report = NamingReport::default();
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(40));
        assert_eq!(
            naming.choose(&instance(&[("Name", &long)], &[]), &mut report),
            None
        );
        assert!(matches!(
            report.skips[0].reason,
            SkipReason::TooLong { max: 61, .. }
        ));
    }

    proptest! {
        #[test]
        fn any_string_gives_a_valid_name_or_a_skip(value in any::<String>()) {
            if let Ok(name) = sanitize(&value, MAX) {
                prop_assert!(is_valid_name(&name, MAX), "{name:?}");
                prop_assert!(!is_instance_id(&name));
            }
        }

        #[test]
        fn hostile_bytes_give_a_valid_name_or_a_skip(
            value in "[a-zA-Z0-9 \\.\\-_#\n\r\t\u{0}\u{e9}\u{65e5}]{0,400}"
        ) {
            if let Ok(name) = sanitize(&value, MAX) {
                prop_assert!(is_valid_name(&name, MAX), "{name:?}");
            }
        }

        #[test]
        fn sanitising_is_idempotent(value in any::<String>()) {
            if let Ok(name) = sanitize(&value, MAX) {
                prop_assert_eq!(sanitize(&name, MAX), Ok(name.clone()));
            }
        }
    }

    fn naming(prefer: &[&str]) -> Naming {
        let rules = prefer.iter().map(|r| r.parse::<Rule>().unwrap()).collect();
        Naming::new(rules, "fleet.internal.")
    }

    fn templated(tags: &[(&str, &str)]) -> Instance {
        let mut i = instance(tags, &["web"]);
        i.availability_zone = Some("us-east-1b".into());
        i.region = Some("us-east-1".into());
        i.vpc_id = Some("vpc-0abc".into());
        i.instance_type = Some("t3.micro".into());
        i.account = Some("123456789012".into());
        i
    }

    #[test]
    fn a_template_joins_its_values_and_falls_through_when_one_is_missing() {
        let n = naming(&["{tag:Role}-{tag:Env}", "{tag:Name}.{az}", "security-group"]);
        let mut report = NamingReport::default();
        let both = templated(&[("Role", "api"), ("Env", "prod"), ("Name", "x")]);
        let choice = n.choose(&both, &mut report).unwrap();
        assert_eq!(choice.name, "api-prod");
        assert_eq!(choice.rule.to_string(), "{tag:Role}-{tag:Env}");
        assert!(report.rewrites.is_empty() && report.skips.is_empty());
        // no Env tag: the next template
        let name_only = templated(&[("Role", "api"), ("Name", "Web 1")]);
        let choice = n.choose(&name_only, &mut report).unwrap();
        assert_eq!(choice.name, "web-1.us-east-1b");
        assert_eq!(report.rewrites.len(), 1, "Web 1 became web-1");
        // neither: the security group
        assert_eq!(n.choose(&templated(&[]), &mut report).unwrap().name, "web");
        // every placeholder
        let all = naming(&["{id}.{az}.{region}.{vpc}.{type}.{account}.{sg}"]);
        assert_eq!(
            all.choose(&templated(&[]), &mut report).unwrap().name,
            "i-0123456789abcdef0.us-east-1b.us-east-1.vpc-0abc.t3-micro.123456789012.web"
        );
    }

    #[test]
    fn a_value_cannot_add_a_label_and_one_that_leaves_nothing_is_a_skip() {
        let n = naming(&["{tag:Role}.{tag:Env}", "tag:Name"]);
        let mut report = NamingReport::default();
        // dots in a value are not label separators; the zone in a value stays text
        let evil = templated(&[("Role", "a.b.fleet.internal"), ("Env", "x# 127.0.0.1")]);
        assert_eq!(
            n.choose(&evil, &mut report).unwrap().name,
            "a-b-fleet-internal.x-127-0-0-1"
        );
        // a value of symbols only: skipped and reported, the next rule answers
        let empty = templated(&[("Role", "---"), ("Env", "prod"), ("Name", "fallback")]);
        assert_eq!(n.choose(&empty, &mut report).unwrap().name, "fallback");
        let skip = report.skips.last().unwrap();
        assert_eq!(
            (skip.value.as_str(), &skip.reason),
            ("---", &SkipReason::NothingValid)
        );
        assert_eq!(skip.rule.to_string(), "{tag:Role}.{tag:Env}");
    }

    #[test]
    fn bad_templates_are_config_errors_that_quote_them() {
        for (text, says) in [
            ("{tag:Role", "never closed"),
            ("{tag:Role}}", "without its '{'"),
            ("{nope}-x", "unknown placeholder {nope}"),
            ("{tag:}", "needs a tag key"),
            ("{}", "unknown placeholder {}"),
            ("{tag:A}_{tag:B}", "'_' in its text"),
            ("{tag:A} {tag:B}", "' ' in its text"),
            ("{tag:{x}}", "inside a placeholder"),
            (".{tag:A}", "empty label"),
            ("{tag:A}..x", "empty label"),
            ("{tag:A}.", "empty label"),
            ("web-}", "without its '{'"),
        ] {
            let error = text.parse::<Rule>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains(&format!("{text:?}")), "{text}: {error}");
        }
        // literal text only is no template, and no tag rule either
        assert!("web-1"
            .parse::<Rule>()
            .unwrap_err()
            .contains("unknown naming rule"));
    }

    proptest! {
        /// Whatever the tag values, every template gives a valid name or
        /// nothing, never an instance-id-shaped name, and never more labels
        /// than its own text makes.
        #[test]
        fn any_tag_values_through_any_template_give_a_valid_name_or_none(
            role in any::<String>(),
            env in "[a-zA-Z0-9 \\.\\-_#\u{0}\u{e9}]{0,80}",
            template in prop::sample::select(vec![
                "{tag:Role}-{tag:Env}", "{tag:Role}.{tag:Env}", "{tag:Role}", "x{tag:Env}y",
                "{tag:Env}.{az}", "i-{tag:Role}", "{tag:Role}{tag:Role}{tag:Role}{tag:Role}{tag:Role}",
            ]),
        ) {
            let n = naming(&[template]);
            let i = templated(&[("Role", &role), ("Env", &env)]);
            let labels = template.split('.').count();
            if let Some(choice) = n.choose(&i, &mut NamingReport::default()) {
                prop_assert!(is_valid_name(&choice.name, MAX), "{:?}", choice.name);
                prop_assert!(!is_instance_id(&choice.name), "{:?}", choice.name);
                prop_assert!(choice.name.split('.').count() <= labels, "{:?}", choice.name);
            }
        }
    }

    proptest! {
        /// A model of a group over time: at each step some members leave
        /// and some join. An ordinal never changes while its member stays,
        /// no two members share one, the first assignment is in id order,
        /// and newcomers fill the lowest free ordinals (so after they
        /// fill the gaps, ordinals are dense).
        #[test]
        fn ordinals_are_stable_unique_and_filled_from_the_lowest(
            steps in prop::collection::vec(prop::collection::btree_set(0u8..30, 0..20), 1..12),
        ) {
            let mut held: std::collections::BTreeMap<String, u32> = Default::default();
            for (step, members) in steps.iter().enumerate() {
                let ids: Vec<String> = members.iter().map(|k| format!("i-{k:02x}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let got = assign_ordinals(&refs, |id| held.get(id).copied());
                let mut seen = std::collections::BTreeSet::new();
                for (id, &n) in refs.iter().zip(&got) {
                    prop_assert!(n >= 1);
                    prop_assert!(seen.insert(n), "ordinal {} twice", n);
                    if let Some(&before) = held.get(*id) {
                        prop_assert_eq!(before, n, "{} moved", id);
                    }
                }
                if step == 0 {
                    let expect: Vec<u32> = (1..=refs.len() as u32).collect();
                    prop_assert_eq!(&got, &expect);
                }
                // newcomers took the lowest ordinals not held by stayers
                let stayers: std::collections::BTreeSet<u32> = refs
                    .iter()
                    .zip(&got)
                    .filter(|(id, _)| held.contains_key(**id))
                    .map(|(_, &n)| n)
                    .collect();
                let mut newcomer: Vec<u32> = refs
                    .iter()
                    .zip(&got)
                    .filter(|(id, _)| !held.contains_key(**id))
                    .map(|(_, &n)| n)
                    .collect();
                let lowest: Vec<u32> = (1..).filter(|n| !stayers.contains(n)).take(newcomer.len()).collect();
                let in_id_order = newcomer.clone();
                newcomer.sort_unstable();
                prop_assert_eq!(&in_id_order, &newcomer, "newcomers in id order");
                prop_assert_eq!(newcomer, lowest);
                held = refs.iter().map(|id| id.to_string()).zip(got).collect();
            }
        }
    }

    #[test]
    fn a_member_replaced_in_the_middle_leaves_a_gap_the_next_newcomer_fills() {
        let first = assign_ordinals(&["i-01", "i-02", "i-03"], |_| None);
        assert_eq!(first, [1, 2, 3]);
        let held = |id: &str| match id {
            "i-01" => Some(1),
            "i-02" => Some(2),
            "i-03" => Some(3),
            _ => None,
        };
        assert_eq!(assign_ordinals(&["i-01", "i-03"], held), [1, 3]);
        // the replacement, whatever its id, takes 2
        assert_eq!(assign_ordinals(&["i-00", "i-01", "i-03"], held), [2, 1, 3]);
        // a damaged record claiming a taken ordinal: the first keeps it
        assert_eq!(assign_ordinals(&["i-01", "i-09"], |_| Some(1)), [1, 2]);
    }
}
