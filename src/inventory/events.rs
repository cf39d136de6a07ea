//! EC2 change events as EventBridge delivers them to an SQS queue: the
//! message body is the whole event (issue 16).
//!
//! An event is a hint, never data: it names an instance that changed, and
//! the instance is then described again with the unit's own filters. So
//! this reads only what routing and that describe need (the kind, the
//! account and region of the envelope, the instance id) and checks each
//! against its form; everything else in the body is ignored. Bodies are
//! untrusted (anyone who may send to the queue writes them): a body that
//! is not an event of ours is [`Parsed::Other`] or [`Parsed::Malformed`],
//! to be counted and deleted, never fatal.
//!
//! The two events, as AWS documents them:
//! - "EC2 Instance State-change Notification", `source: aws.ec2`, with
//!   `detail.instance-id` and `detail.state`;
//! - "Tag Change on Resource", `source: aws.tag`, with
//!   `detail.resource-type: instance` and no instance id in `detail`: it is
//!   the last part of the ARN in `resources[0]`
//!   (`arn:aws:ec2:REGION:ACCOUNT:instance/i-...`).
//!
//! EventBridge always sets `account` and `region`; moto leaves `account`
//! out, and a unit then takes the ambient account. A tag event's ARN also
//! names both, and fills in what the envelope lacks.

use serde::Deserialize;

/// The largest body read: SQS's own limit for a message.
pub const MAX_BODY: usize = 256 * 1024;

/// What changed, by the event's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "EC2 Instance State-change Notification".
    State,
    /// "Tag Change on Resource" for an instance.
    Tag,
}

impl Kind {
    /// The `kind` label of `fleetdns_events_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::State => "state",
            Kind::Tag => "tag",
        }
    }
}

/// An instance that changed, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Which event said so.
    pub kind: Kind,
    /// The instance id (`i-` and 8 or 17 hex digits).
    pub instance_id: String,
    /// The account of the envelope (or the ARN); `None`: the ambient one.
    pub account: Option<String>,
    /// The region of the envelope (or the ARN).
    pub region: Option<String>,
}

/// What a message body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// One of the two events, for an instance.
    Event(Event),
    /// A well-formed event of another kind (another source, a tag change
    /// of a volume, ...): deleted and counted as `other`.
    Other,
    /// Not an event at all, or one of ours without what it must have:
    /// deleted and counted as `malformed`, with the reason for the log.
    Malformed(String),
}

/// The envelope's fields that matter; serde skips the rest.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default, rename = "detail-type")]
    detail_type: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    detail: Option<Detail>,
}

/// `detail`: the fields either event may have.
#[derive(Deserialize)]
struct Detail {
    #[serde(default, rename = "instance-id")]
    instance_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default, rename = "resource-type")]
    resource_type: Option<String>,
}

/// Reads one message body.
pub fn parse(body: &str) -> Parsed {
    if body.len() > MAX_BODY {
        return Parsed::Malformed(format!(
            "a body of {} bytes (SQS allows {MAX_BODY})",
            body.len()
        ));
    }
    let envelope: Envelope = match serde_json::from_str(body) {
        Ok(e) => e,
        Err(error) => return Parsed::Malformed(format!("not an event: {error}")),
    };
    let (Some(source), Some(detail_type)) = (&envelope.source, &envelope.detail_type) else {
        return Parsed::Malformed("no source or detail-type".to_string());
    };
    let kind = match (source.as_ref(), detail_type.as_ref()) {
        ("aws.ec2", "EC2 Instance State-change Notification") => Kind::State,
        ("aws.tag", "Tag Change on Resource") => Kind::Tag,
        _ => return Parsed::Other,
    };
    let account = match envelope.account.as_deref().map(check_account).transpose() {
        Ok(a) => a,
        Err(why) => return Parsed::Malformed(why),
    };
    let region = match envelope.region.as_deref().map(check_region).transpose() {
        Ok(r) => r,
        Err(why) => return Parsed::Malformed(why),
    };
    let Some(detail) = envelope.detail else {
        return Parsed::Malformed(format!("a {} event without detail", kind.label()));
    };
    match kind {
        Kind::State => {
            let Some(id) = detail.instance_id.as_deref() else {
                return Parsed::Malformed("a state-change event without detail.instance-id".into());
            };
            if detail.state.is_none() {
                return Parsed::Malformed("a state-change event without detail.state".into());
            }
            match check_instance_id(id) {
                Ok(instance_id) => Parsed::Event(Event {
                    kind,
                    instance_id,
                    account,
                    region,
                }),
                Err(why) => Parsed::Malformed(why),
            }
        }
        Kind::Tag => {
            if detail.resource_type.as_deref() != Some("instance") {
                return Parsed::Other; // a volume's tags, an AMI's, ...
            }
            let Some(arn) = envelope.resources.first() else {
                return Parsed::Malformed("a tag-change event without resources".into());
            };
            match instance_arn(arn) {
                Ok((arn_region, arn_account, instance_id)) => Parsed::Event(Event {
                    kind,
                    instance_id,
                    account: account.or(arn_account),
                    region: region.or(Some(arn_region)),
                }),
                Err(why) => Parsed::Malformed(why),
            }
        }
    }
}

/// `i-` and 8 or 17 lowercase hex digits, as EC2 writes instance ids.
fn check_instance_id(id: &str) -> Result<String, String> {
    let ok = id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!("{:?} is not an instance id", shorten(id)))
    }
}

/// Twelve digits.
fn check_account(account: &str) -> Result<String, String> {
    if super::ec2_settings::is_account_id(account) {
        Ok(account.to_string())
    } else {
        Err(format!("{:?} is not an account id", shorten(account)))
    }
}

/// A region's form: lowercase letters, digits and dashes (`us-east-1`,
/// `us-gov-west-1`), 1 to 32 characters.
fn check_region(region: &str) -> Result<String, String> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(region.to_string())
    } else {
        Err(format!("{:?} is not a region", shorten(region)))
    }
}

/// The region, account (if any) and instance id of an instance's ARN,
/// `arn:PARTITION:ec2:REGION:ACCOUNT:instance/i-...`.
fn instance_arn(arn: &str) -> Result<(String, Option<String>, String), String> {
    let bad = || format!("{:?} is not an instance ARN", shorten(arn));
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("ec2"), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let id = resource.strip_prefix("instance/").ok_or_else(bad)?;
    let account = if account.is_empty() {
        None
    } else {
        Some(check_account(account)?)
    };
    Ok((check_region(region)?, account, check_instance_id(id)?))
}

/// At most 64 characters of untrusted text, for a log line.
fn shorten(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STATE: &str = concat!(
        r#"{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","#,
        r#""detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","#,
        r#""account":"123456789012","time":"2026-11-30T12:00:00Z","region":"us-east-1","#,
        r#""resources":["arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0"],"#,
        r#""detail":{"instance-id":"i-1234567890abcdef0","state":"stopping"}}"#
    );

    const TAG: &str = concat!(
        r#"{"version":"0","id":"ffd8a6fe-32f8-ef66-c85c-111111111111","#,
        r#""detail-type":"Tag Change on Resource","source":"aws.tag","#,
        r#""account":"123456789012","time":"2026-11-30T12:00:00Z","region":"eu-west-1","#,
        r#""resources":["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcdef1234567890"],"#,
        r#""detail":{"changed-tag-keys":["Name"],"service":"ec2","resource-type":"instance","#,
        r#""version":3,"tags":{"Name":"web-9"}}}"#
    );

    fn event(kind: Kind, id: &str, account: Option<&str>, region: &str) -> Parsed {
        Parsed::Event(Event {
            kind,
            instance_id: id.to_string(),
            account: account.map(str::to_string),
            region: Some(region.to_string()),
        })
    }

    /// What [`TAG`] says, with or without the envelope's account and
    /// region (its ARN names both).
    fn tag_event() -> Parsed {
        event(
            Kind::Tag,
            "i-0abcdef1234567890",
            Some("123456789012"),
            "eu-west-1",
        )
    }

    #[test]
    fn the_two_events_as_aws_documents_them() {
        assert_eq!(
            parse(STATE),
            event(
                Kind::State,
                "i-1234567890abcdef0",
                Some("123456789012"),
                "us-east-1"
            )
        );
        assert_eq!(parse(TAG), tag_event());
    }

    #[test]
    fn without_an_account_in_the_envelope_the_arn_or_the_ambient_one_is_used() {
        // moto leaves `account` out
        let state = STATE.replace(r#""account":"123456789012","#, "");
        assert_eq!(
            parse(&state),
            event(Kind::State, "i-1234567890abcdef0", None, "us-east-1")
        );
        let tag = TAG.replace(r#""account":"123456789012","region":"eu-west-1","#, "");
        assert_eq!(parse(&tag), tag_event());
    }

    #[test]
    fn other_events_and_other_resources_are_other() {
        for body in [
            STATE.replace("aws.ec2", "aws.s3"),
            STATE.replace(
                "EC2 Instance State-change Notification",
                "EC2 Spot Instance Interruption Warning",
            ),
            TAG.replace(
                r#""resource-type":"instance""#,
                r#""resource-type":"volume""#,
            ),
            r#"{"source":"my.app","detail-type":"hello"}"#.to_string(),
        ] {
            assert_eq!(parse(&body), Parsed::Other, "{body}");
        }
    }

    #[test]
    fn bodies_that_are_not_our_events_say_why() {
        for (body, why) in [
            ("not json".to_string(), "not an event"),
            ("[1,2]".to_string(), "not an event"),
            ("{}".to_string(), "no source or detail-type"),
            (STATE.replace(r#","detail":{"instance-id":"i-1234567890abcdef0","state":"stopping"}"#, ""), "without detail"),
            (STATE.replace("i-1234567890abcdef0\",\"state", "i-XYZ\",\"state"), "\"i-XYZ\" is not an instance id"),
            (STATE.replace("\"state\":\"stopping\"", "\"x\":1"), "without detail.state"),
            (STATE.replace("123456789012\",\"time", "12345\",\"time"), "\"12345\" is not an account id"),
            (STATE.replace("\"us-east-1\"", "\"US East\""), "\"US East\" is not a region"),
            (TAG.replace("arn:aws:ec2:eu-west-1:123456789012:instance/", "arn:aws:s3:::"), "is not an instance ARN"),
            (TAG.replace(r#""resources":["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcdef1234567890"],"#, ""), "without resources"),
            (format!("{{\"source\":\"{}\"}}", "x".repeat(MAX_BODY)), "a body of"),
        ] {
            assert!(body != STATE && body != TAG, "the case changed nothing: {why}");
            match parse(&body) {
                Parsed::Malformed(reason) => assert!(reason.contains(why), "{reason} / {why}"),
                other => panic!("{other:?} for {body}"),
            }
        }
    }

    proptest! {
        /// Whatever the strings, an event is either parsed back exactly or
        /// turned away; an id that comes out always has the instance-id form.
        #[test]
        fn any_field_values_give_the_event_or_a_reason(
            id in "(i-[0-9a-f]{17}|i-[0-9a-f]{8}|\\PC{0,30})",
            account in "([0-9]{12}|\\PC{0,15})",
            region in "([a-z]{2}-[a-z]+-[0-9]|\\PC{0,12})",
            state in "\\PC{0,12}",
        ) {
            let body = serde_json::json!({
                "detail-type": "EC2 Instance State-change Notification",
                "source": "aws.ec2",
                "account": account,
                "region": region,
                "detail": { "instance-id": id, "state": state },
            })
            .to_string();
            match parse(&body) {
                Parsed::Event(e) => {
                    prop_assert_eq!(&e.instance_id, &id);
                    prop_assert!(check_instance_id(&e.instance_id).is_ok());
                    prop_assert_eq!(e.account.as_deref(), Some(account.as_str()));
                    prop_assert_eq!(e.region.as_deref(), Some(region.as_str()));
                }
                Parsed::Malformed(_) => {
                    prop_assert!(
                        check_instance_id(&id).is_err()
                            || check_account(&account).is_err()
                            || check_region(&region).is_err()
                    );
                }
                Parsed::Other => prop_assert!(false, "our own event read as other"),
            }
        }
    }
}
