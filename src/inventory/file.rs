//! The file source: the JSON that `aws ec2 describe-instances` prints.
//!
//! This is how fleetdns runs without AWS (the demo, tests, hosts that get
//! their inventory from elsewhere). Only the fields fleetdns uses are read;
//! everything else in the document is ignored, as the CLI adds fields over
//! time. A document that is not JSON or not shaped like the CLI's output is
//! an error naming the file; a single bad address inside an otherwise good
//! document is skipped with a warning, so one odd instance cannot hide the
//! rest of the fleet.

use std::path::{Path, PathBuf};

use std::borrow::Cow;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{
    collect_addresses, region_of_zone, Instance, InterfaceAddresses, Source, SourceError, UnitFetch,
};

/// Reads instances from a describe-instances JSON file, every time it fetches.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The file to read.
    path: PathBuf,
}

impl FileSource {
    /// A source that reads `path` on every fetch.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file once.
    pub fn read(&self) -> Result<Vec<Instance>, SourceError> {
        let path = self.path.display().to_string();
        let text =
            crate::files::read_text_in_chunks(&self.path).map_err(|source| SourceError::Read {
                path: path.clone(),
                source,
            })?;
        parse_describe_instances(&text).map_err(|reason| SourceError::Parse { path, reason })
    }
}

#[async_trait::async_trait]
impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn units(&self) -> Vec<String> {
        vec![self.describe()]
    }

    async fn fetch(&self) -> Vec<UnitFetch> {
        // The file is small next to anything the runtime does; reading it on a
        // blocking thread keeps a slow disk from stalling DNS answers.
        let this = self.clone();
        let result = match crate::background::run(move || this.read()).await {
            Ok(result) => result,
            Err(join) => Err(SourceError::Parse {
                path: self.path.display().to_string(),
                reason: format!("reader task failed: {join}"),
            }),
        };
        vec![UnitFetch {
            unit: self.describe(),
            result,
        }]
    }
}

/// The top of a describe-instances document.
///
/// Instances are converted one by one as the parser reaches them, and the
/// raw strings borrow from the text, so a large document never exists
/// twice in memory (raw and converted).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    /// Every reservation's instances, in document order.
    #[serde(deserialize_with = "all_instances")]
    reservations: Vec<Instance>,
}

/// One reservation (one `run-instances` call).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reservation {
    /// The instances launched together, converted.
    #[serde(default, deserialize_with = "converted_instances")]
    instances: Vec<Instance>,
}

/// Reads the `Reservations` array into one list of instances.
fn all_instances<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Instance>, D::Error> {
    struct Reservations;
    impl<'de> Visitor<'de> for Reservations {
        type Value = Vec<Instance>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of reservations")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Instance>, A::Error> {
            let mut all = Vec::new();
            while let Some(reservation) = seq.next_element::<Reservation>()? {
                all.extend(reservation.instances);
            }
            Ok(all)
        }
    }
    d.deserialize_seq(Reservations)
}

/// Reads an `Instances` array, converting each instance as it is parsed.
fn converted_instances<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Instance>, D::Error> {
    struct Instances;
    impl<'de> Visitor<'de> for Instances {
        type Value = Vec<Instance>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of instances")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Instance>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(raw) = seq.next_element::<RawInstance<'de>>()? {
                crate::background::checkpoint();
                out.push(into_instance(raw));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Instances)
}

/// The fields of an instance that fleetdns reads. Strings borrow from the
/// document where they have no escapes.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInstance<'a> {
    #[serde(borrow)]
    instance_id: Cow<'a, str>,
    #[serde(borrow)]
    state: RawState<'a>,
    #[serde(borrow)]
    private_ip_address: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    network_interfaces: Vec<RawInterface<'a>>,
    #[serde(default, borrow)]
    tags: Vec<RawTag<'a>>,
    #[serde(default, borrow)]
    security_groups: Vec<RawGroup<'a>>,
    #[serde(borrow)]
    placement: Option<RawPlacement<'a>>,
    #[serde(borrow)]
    instance_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    launch_time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    vpc_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawState<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInterface<'a> {
    #[serde(default, borrow)]
    private_ip_addresses: Vec<RawPrivateIp<'a>>,
    #[serde(default, borrow)]
    ipv6_addresses: Vec<RawIpv6<'a>>,
    attachment: Option<RawAttachment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawAttachment {
    device_index: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPrivateIp<'a> {
    #[serde(borrow)]
    private_ip_address: Option<Cow<'a, str>>,
    #[serde(default)]
    primary: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIpv6<'a> {
    #[serde(borrow)]
    ipv6_address: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTag<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawGroup<'a> {
    #[serde(borrow)]
    group_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPlacement<'a> {
    #[serde(borrow)]
    availability_zone: Option<Cow<'a, str>>,
}

/// Parses a describe-instances document into instances, in document order.
///
/// Returns the reason as text when the document is not usable at all.
pub fn parse_describe_instances(text: &str) -> Result<Vec<Instance>, String> {
    let doc: Document = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(doc.reservations)
}

/// Turns the CLI's shape into an [`Instance`], skipping unparsable addresses.
fn into_instance(raw: RawInstance<'_>) -> Instance {
    let interfaces = raw
        .network_interfaces
        .iter()
        .map(|i| InterfaceAddresses {
            device_index: i
                .attachment
                .as_ref()
                .and_then(|a| a.device_index)
                .map(i64::from),
            private: i
                .private_ip_addresses
                .iter()
                .filter_map(|a| Some((a.private_ip_address.as_deref()?, a.primary)))
                .collect(),
            ipv6: i
                .ipv6_addresses
                .iter()
                .filter_map(|a| a.ipv6_address.as_deref())
                .collect(),
        })
        .collect();
    let (private_ipv4, ipv6) = collect_addresses(
        &raw.instance_id,
        raw.private_ip_address.as_deref(),
        interfaces,
    );
    let availability_zone = raw
        .placement
        .and_then(|p| p.availability_zone)
        .map(Cow::into_owned);
    let region = availability_zone.as_deref().and_then(region_of_zone);
    Instance {
        id: raw.instance_id.into_owned(),
        state: raw.state.name.into_owned(),
        private_ipv4,
        ipv6,
        tags: raw.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        security_groups: raw
            .security_groups
            .into_iter()
            .filter_map(|g| g.group_name.map(Cow::into_owned))
            .collect(),
        launch_time: raw.launch_time.map(Cow::into_owned),
        region,
        vpc_id: raw.vpc_id.map(Cow::into_owned),
        availability_zone,
        instance_type: raw.instance_type.map(Cow::into_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const ONE: &str = r#"{"Reservations":[{"Instances":[{
        "InstanceId":"i-0123456789abcdef0","State":{"Code":16,"Name":"running"},
        "PrivateIpAddress":"10.0.0.5","InstanceType":"t3.micro",
        "Placement":{"AvailabilityZone":"eu-west-1b"},
        "Tags":[{"Key":"Name","Value":"web-1"}],
        "SecurityGroups":[{"GroupName":"web","GroupId":"sg-1"}],
        "NetworkInterfaces":[
          {"Attachment":{"DeviceIndex":1},"PrivateIpAddresses":[{"Primary":true,"PrivateIpAddress":"10.0.1.9"}]},
          {"Attachment":{"DeviceIndex":0},"PrivateIpAddresses":[
             {"Primary":false,"PrivateIpAddress":"10.0.0.6"},
             {"Primary":true,"PrivateIpAddress":"10.0.0.5"}],
           "Ipv6Addresses":[{"Ipv6Address":"2001:db8::5"},{"Ipv6Address":"not-an-ip"}]}
        ],
        "Unknown":{"Fields":"ignored"}}]}]}"#;

    #[test]
    fn reads_every_address_primary_first() {
        let instances = parse_describe_instances(ONE).unwrap();
        assert_eq!(instances.len(), 1);
        let i = &instances[0];
        assert_eq!(i.id, "i-0123456789abcdef0");
        assert!(i.is_running());
        let v4: Vec<String> = i.private_ipv4.iter().map(|a| a.to_string()).collect();
        assert_eq!(v4, ["10.0.0.5", "10.0.0.6", "10.0.1.9"]);
        assert_eq!(i.ipv6, ["2001:db8::5".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(i.tags.get("Name"), Some("web-1"));
        assert_eq!(i.security_groups, ["web"]);
        assert_eq!(i.region.as_deref(), Some("eu-west-1"));
        assert_eq!(i.availability_zone.as_deref(), Some("eu-west-1b"));
    }

    #[test]
    fn malformed_document_is_an_error_with_the_reason() {
        let err = parse_describe_instances("{\"Reservations\": 3}").unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        assert!(parse_describe_instances("not json").is_err());
        assert!(parse_describe_instances("{}")
            .unwrap_err()
            .contains("Reservations"));
    }

    #[test]
    fn terminated_instance_without_addresses_parses() {
        let text = r#"{"Reservations":[{"Instances":[{"InstanceId":"i-1","State":{"Name":"terminated"},
            "NetworkInterfaces":[],"SecurityGroups":[]}]}]}"#;
        let i = &parse_describe_instances(text).unwrap()[0];
        assert!(!i.is_running());
        assert!(i.private_ipv4.is_empty());
    }

    #[test]
    fn region_comes_from_the_zone() {
        assert_eq!(region_of_zone("us-east-1a").as_deref(), Some("us-east-1"));
        assert_eq!(region_of_zone("us-east-1").as_deref(), None);
        assert_eq!(region_of_zone("a").as_deref(), None);
    }
}
